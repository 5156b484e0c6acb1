"""The micro-batcher in-process: gathering limits, per-item results, failures."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from worker_mesh.gpu_pool.batching import BatchReport, MicroBatcher
from worker_mesh.mesh.errors import PermanentError


def test_gathers_up_to_max_batch_and_each_caller_gets_its_own_result() -> None:
    passes: list[list[int]] = []
    gate = threading.Event()

    def fn(xs: list[int]) -> list[int]:
        gate.wait(5)  # the first pass blocks, so the rest pile up behind it
        passes.append(list(xs))
        return [x * 10 for x in xs]

    b = MicroBatcher("t", fn, max_batch=4, max_wait_ms=50)
    futs = [b.submit(i) for i in range(9)]
    time.sleep(0.2)
    gate.set()
    assert [f.result(10) for f in futs] == [i * 10 for i in range(9)]
    assert all(len(p) <= 4 for p in passes) and sum(len(p) for p in passes) == 9
    assert max(len(p) for p in passes) == 4
    b.close()


def test_max_wait_flushes_a_partial_batch() -> None:
    b = MicroBatcher("t", lambda xs: xs, max_batch=100, max_wait_ms=30)
    t0 = time.monotonic()
    assert b(7, timeout_s=10) == 7
    assert time.monotonic() - t0 < 5  # did not wait for 100 items
    b.close()


def test_concurrent_callers_share_passes() -> None:
    passes: list[int] = []

    def fn(xs: list[int]) -> list[int]:
        passes.append(len(xs))
        return [x + 1 for x in xs]

    b = MicroBatcher("t", fn, max_batch=16, max_wait_ms=100)
    with ThreadPoolExecutor(16) as ex:
        out = list(ex.map(lambda i: b(i, timeout_s=10), range(32)))
    assert out == [i + 1 for i in range(32)]
    assert len(passes) < 32 and max(passes) > 1
    b.close()


def test_poisoned_item_fails_alone_after_retry_and_split() -> None:
    calls: list[list[str]] = []
    reports: list[BatchReport] = []

    def fn(xs: list[str]) -> list[str]:
        calls.append(list(xs))
        if "poison" in xs:
            raise RuntimeError("boom")
        return [x.upper() for x in xs]

    b = MicroBatcher("t", fn, max_batch=8, max_wait_ms=200, retries=1, on_batch=reports.append)
    items = ["a", "b", "poison", "c", "d", "e"]
    futs = [b.submit(x) for x in items]
    for x, f in zip(items, futs, strict=True):
        if x == "poison":
            with pytest.raises(RuntimeError, match="boom"):
                f.result(10)
        else:
            assert f.result(10) == x.upper()
    assert calls[0] == items and calls[1] == items  # retried once as a whole first
    assert ["poison"] in calls  # then isolated
    assert any(not r.ok for r in reports) and any(r.ok for r in reports)
    b.close()


def test_transient_whole_batch_failure_is_retried_without_losing_items() -> None:
    state = {"n": 0}

    def fn(xs: list[int]) -> list[int]:
        state["n"] += 1
        if state["n"] == 1:
            raise ConnectionError("CUDA hiccup")
        return xs

    b = MicroBatcher("t", fn, max_batch=8, max_wait_ms=100, retries=1)
    futs = [b.submit(i) for i in range(5)]
    assert [f.result(10) for f in futs] == list(range(5))
    b.close()


def test_permanent_error_is_not_retried_as_a_whole_but_split() -> None:
    calls: list[list[int]] = []

    def fn(xs: list[int]) -> list[int]:
        calls.append(list(xs))
        if 3 in xs:
            raise PermanentError("bad row 3")
        return xs

    b = MicroBatcher("t", fn, max_batch=4, max_wait_ms=200, retries=3)
    futs = [b.submit(i) for i in range(4)]
    assert [f.result(10) for i, f in enumerate(futs) if i != 3] == [0, 1, 2]
    with pytest.raises(PermanentError):
        futs[3].result(10)
    assert calls[0] == [0, 1, 2, 3] and calls[1] != [0, 1, 2, 3]


def test_per_item_exception_results_fail_only_that_item() -> None:
    def fn(xs: list[int]) -> list[object]:
        return [ValueError("odd") if x % 2 else x for x in xs]

    b = MicroBatcher("t", fn, max_batch=8, max_wait_ms=100)
    futs = [b.submit(i) for i in range(4)]
    assert futs[0].result(10) == 0 and futs[2].result(10) == 2
    with pytest.raises(ValueError):
        futs[1].result(10)


def test_wrong_result_count_fails_the_items_not_the_thread() -> None:
    b = MicroBatcher("t", lambda xs: xs[:-1], max_batch=4, max_wait_ms=50, retries=0)
    with pytest.raises(RuntimeError):
        b(1, timeout_s=10)  # one item -> zero results -> error, not a hang
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(2)


def test_batch_hook_records_gpu_seconds_per_task_type(settings) -> None:  # type: ignore[no-untyped-def]
    """The worker's hook: metric by task type, and Redis GPU-seconds split between the
    deferred and direct items of the pass."""
    from prometheus_client import REGISTRY

    from worker_mesh.workers.runtime import Runtime
    from worker_mesh.workers.tasks.gpu import _on_batch

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"task_type": "bench-x"}) or 0.0

    rt = Runtime(settings)
    before = sample("mesh_gpu_seconds_total")
    _on_batch(rt)(BatchReport("bench-x", 4, 0.01, 0.2, True,
                              ("deferred", "direct", "direct", "direct")))
    assert abs(sample("mesh_gpu_seconds_total") - before - 0.2) < 1e-9
    assert sample("mesh_gpu_batch_size_count") >= 1
    cost = {k.decode().rsplit("|", 1)[1]: float(v)
            for k, v in rt.redis.hgetall(rt.keys.gpu_cost()).items()}
    assert abs(cost["deferred"] - 0.05) < 1e-9 and abs(cost["direct"] - 0.15) < 1e-9
