"""Off-peak windows: ``HH:MM-HH:MM <IANA zone>``, several allowed.

A window is a daily span of *local* wall-clock time in its zone, so ``01:00-06:00
Europe/Berlin`` follows daylight saving time. A window whose end is not after its start
crosses midnight (``22:00-02:00``). ``start == end`` is rejected (ambiguous: empty or
all day?); write ``00:00-24:00`` for all day.

Times are computed, never slept on: ``is_open(now)`` and ``next_open(now)`` take the
instant to judge, so callers inject a clock and tests never wait for hours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker_mesh.mesh.errors import ConfigError

_SPEC = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s+(\S+)\s*$")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware instant (e.g. datetime.now(UTC))")
    return now


@dataclass(frozen=True)
class Window:
    """One daily window in one zone. ``end_min`` may be 1440 (24:00)."""

    start_min: int
    end_min: int
    zone: str

    @classmethod
    def parse(cls, spec: str) -> Window:
        m = _SPEC.match(spec)
        if not m:
            raise ConfigError(f"off-peak window {spec!r}: expected 'HH:MM-HH:MM <IANA zone>'")
        h1, m1, h2, m2, zone = int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5]
        if not (0 <= h1 <= 23 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60) or (h2 == 24 and m2):
            raise ConfigError(f"off-peak window {spec!r}: time out of range")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"off-peak window {spec!r}: unknown time zone {zone!r}") from exc
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise ConfigError(f"off-peak window {spec!r}: start equals end (use 00:00-24:00)")
        return cls(start, end, zone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def _local(self, day: date, minute: int) -> datetime:
        """The UTC instant of ``minute`` past local midnight of ``day``.

        A wall time in a spring-forward gap is shifted forward by the gap's length
        (02:30 on a 02:00->03:00 night is 03:30), as ``java.time`` does; an ambiguous
        fall-back time takes its first occurrence (``fold=0``).
        """
        naive = datetime.combine(day, time()) + timedelta(minutes=minute)
        return naive.replace(tzinfo=self.tz).astimezone(UTC)

    def spans(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The occurrences (UTC start, UTC end) around ``now``: yesterday .. in 2 days."""
        today = _aware(now).astimezone(self.tz).date()
        out = []
        for d in range(-1, 3):
            day = today + timedelta(days=d)
            end_day = day if self.end_min > self.start_min else day + timedelta(days=1)
            out.append((self._local(day, self.start_min), self._local(end_day, self.end_min)))
        return out

    def is_open(self, now: datetime) -> bool:
        return any(s <= now < e for s, e in self.spans(now))

    def next_open(self, now: datetime) -> datetime:
        """The next start strictly after ``now`` (a window already open has a next start too)."""
        return min(s for s, _ in self.spans(now) if s > now)

    def current_end(self, now: datetime) -> datetime | None:
        ends = [e for s, e in self.spans(now) if s <= now < e]
        return max(ends) if ends else None


class Windows:
    """A set of off-peak windows (open when any of them is)."""

    def __init__(self, windows: Iterable[Window]) -> None:
        self.windows = tuple(windows)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Windows:
        return cls(Window.parse(s) for s in specs)

    def __bool__(self) -> bool:
        return bool(self.windows)

    def is_open(self, now: datetime) -> bool:
        now = _aware(now)
        return any(w.is_open(now) for w in self.windows)

    def next_open(self, now: datetime) -> datetime | None:
        """When the pool is next open: ``now`` itself when open already, else the
        earliest window start after ``now``; None when there are no windows."""
        now = _aware(now)
        if not self.windows:
            return None
        if self.is_open(now):
            return now
        return min(w.next_open(now) for w in self.windows)

    def seconds_until_open(self, now: datetime) -> float | None:
        nxt = self.next_open(now)
        return None if nxt is None else max(0.0, (nxt - now).total_seconds())
