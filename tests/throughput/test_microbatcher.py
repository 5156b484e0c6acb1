"""The generic micro-batcher (``mesh.batching``): requests of several items, and the
early flush once every possible caller is in."""

from __future__ import annotations

import threading
import time

from worker_mesh.mesh.batching import MicroBatcher


def test_map_keeps_a_callers_items_together_and_splits_only_past_max_batch() -> None:
    passes: list[list[int]] = []

    def fn(xs: list[int]) -> list[int]:
        passes.append(list(xs))
        return [x * 2 for x in xs]

    b = MicroBatcher("t", fn, max_batch=4, max_wait_ms=0)
    # Given one caller with 10 items, when it maps them, then every item gets its own
    # result, in order, in passes of at most 4 that follow the caller's order.
    assert b.map(list(range(10)), timeout_s=10) == [x * 2 for x in range(10)]
    assert [len(p) for p in passes] == [4, 4, 2]
    assert [x for p in passes for x in p] == list(range(10))
    b.close()


def test_all_callers_in_flushes_without_waiting_out_max_wait() -> None:
    b = MicroBatcher("t", lambda xs: xs, max_batch=64, max_wait_ms=5000, max_callers=1)
    t0 = time.monotonic()
    # Given the only possible caller (a solo worker), its request runs at once.
    assert b.map([1, 2, 3], timeout_s=10) == [1, 2, 3]
    assert time.monotonic() - t0 < 2.5
    b.close()


def test_two_callers_share_one_pass_when_both_are_expected() -> None:
    passes: list[list[str]] = []
    b = MicroBatcher("t", lambda xs: passes.append(list(xs)) or xs, max_batch=64,
                     max_wait_ms=3000, max_callers=2)
    out: dict[str, list[str]] = {}

    def call(name: str) -> None:
        out[name] = b.map([name + "1", name + "2"], timeout_s=10)

    threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Then both callers were served by one pass, well before max_wait.
    assert out == {"a": ["a1", "a2"], "b": ["b1", "b2"]}
    assert len(passes) == 1 and sorted(passes[0]) == ["a1", "a2", "b1", "b2"]
    assert time.monotonic() - t0 < 2.5
    b.close()


def test_one_failing_item_of_a_request_fails_alone() -> None:
    def fn(xs: list[int]) -> list[object]:
        if 3 in xs:
            raise ValueError("row 3 is bad")
        return xs

    b = MicroBatcher("t", fn, max_batch=8, max_wait_ms=0, retries=0)
    futs = b.submit_many([1, 2, 3, 4])
    assert [futs[i].result(10) for i in (0, 1, 3)] == [1, 2, 4]
    assert isinstance(futs[2].exception(10), ValueError)
    b.close()
