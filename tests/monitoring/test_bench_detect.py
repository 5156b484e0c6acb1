"""`mesh bench --only detect` finds the detection benchmark and gives it the time it
declares (its full run takes about 40 minutes, more than run_all's default)."""

from __future__ import annotations

import pytest

from benchmarks import run_all


def test_only_detect_selects_the_detection_benchmark() -> None:
    names = run_all.modules()
    assert run_all.select(names, "detect") == ["bench_detect"]
    assert run_all.select(names, "bench_detect,ingest") == ["ingest", "bench_detect"]
    assert "_detect_probe" not in names and "_alert_receiver" not in names
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_all.select(names, "detekt")


def test_the_detection_benchmark_declares_its_own_timeout() -> None:
    assert run_all.declared_timeout_s("bench_detect") >= 3600
    assert run_all.declared_timeout_s("ingest") == 0
    assert run_all.supports_quick("bench_detect")
