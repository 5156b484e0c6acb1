"""Off-peak windows: parsing, midnight crossing, several windows, DST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker_mesh.gpu_pool.offpeak import Window, Windows
from worker_mesh.mesh.errors import ConfigError


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def test_simple_window_open_and_next() -> None:
    w = Windows.parse(["01:00-06:00 UTC"])
    assert not w.is_open(utc(2026, 3, 1, 0, 59))
    assert w.is_open(utc(2026, 3, 1, 1, 0))
    assert w.is_open(utc(2026, 3, 1, 5, 59))
    assert not w.is_open(utc(2026, 3, 1, 6, 0))
    assert w.next_open(utc(2026, 3, 1, 7, 0)) == utc(2026, 3, 2, 1, 0)
    assert w.next_open(utc(2026, 3, 1, 0, 30)) == utc(2026, 3, 1, 1, 0)
    assert w.next_open(utc(2026, 3, 1, 2, 0)) == utc(2026, 3, 1, 2, 0)  # open: now


def test_window_crossing_midnight() -> None:
    w = Windows.parse(["22:00-02:00 UTC"])
    assert w.is_open(utc(2026, 3, 1, 23, 0))
    assert w.is_open(utc(2026, 3, 2, 1, 59))
    assert not w.is_open(utc(2026, 3, 2, 2, 0))
    assert not w.is_open(utc(2026, 3, 2, 21, 59))
    assert w.next_open(utc(2026, 3, 2, 12, 0)) == utc(2026, 3, 2, 22, 0)


def test_several_windows_earliest_wins() -> None:
    w = Windows.parse(["01:00-03:00 UTC", "12:00-13:00 UTC"])
    assert w.is_open(utc(2026, 3, 1, 12, 30))
    assert w.next_open(utc(2026, 3, 1, 4, 0)) == utc(2026, 3, 1, 12, 0)
    assert w.next_open(utc(2026, 3, 1, 14, 0)) == utc(2026, 3, 2, 1, 0)


def test_dst_aware_berlin() -> None:
    w = Windows.parse(["01:00-06:00 Europe/Berlin"])
    # Winter: CET = UTC+1 -> opens 00:00 UTC.
    assert w.next_open(utc(2026, 1, 15, 12, 0)) == utc(2026, 1, 16, 0, 0)
    # Summer: CEST = UTC+2 -> opens 23:00 UTC the day before.
    assert w.next_open(utc(2026, 7, 15, 12, 0)) == utc(2026, 7, 15, 23, 0)
    assert w.is_open(utc(2026, 7, 15, 23, 30))
    assert not w.is_open(utc(2026, 7, 16, 4, 0))  # 06:00 CEST: closed


def test_dst_gap_start_maps_after_gap() -> None:
    # 2026-03-29 02:00-03:00 does not exist in Berlin; a 02:30 start opens at 03:30 CEST.
    w = Windows.parse(["02:30-05:00 Europe/Berlin"])
    assert w.next_open(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 30)
    assert w.is_open(utc(2026, 3, 29, 2, 59))  # 04:59 CEST
    assert not w.is_open(utc(2026, 3, 29, 3, 0))  # 05:00 CEST


def test_all_day_and_zone_names() -> None:
    w = Windows.parse(["00:00-24:00 America/New_York"])
    assert w.is_open(utc(2026, 5, 5, 3, 0))
    assert Window.parse("1:05-2:10 Asia/Tokyo").start_min == 65


@pytest.mark.parametrize("spec", ["01:00-06:00", "25:00-06:00 UTC", "01:00-01:00 UTC",
                                  "01:00-06:00 Mars/Olympus", "1-6 UTC", "01:00-24:30 UTC"])
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        Window.parse(spec)


def test_naive_datetime_rejected_and_no_windows() -> None:
    with pytest.raises(ValueError):
        Windows.parse(["01:00-02:00 UTC"]).is_open(datetime(2026, 1, 1))
    empty = Windows.parse([])
    assert not empty.is_open(utc(2026, 1, 1)) and empty.next_open(utc(2026, 1, 1)) is None
