"""Hostile input at the wire level: ``events.wire.decode`` on arbitrary stream entries.

The property: decode returns a valid envelope or raises ``InvalidEvent`` (a permanent
error the dispatcher dead-letters) with a short, readable reason; never anything else,
never a huge message, never unbounded work on a huge or deeply nested entry.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.hostile import GOOD, hostile_entries
from worker_mesh.events.base import Envelope
from worker_mesh.events.wire import decode, original_fields
from worker_mesh.mesh.errors import InvalidEvent, PayloadTooLarge

LIMIT = 64 * 1024


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_entries)
def test_decode_accepts_or_rejects_with_a_reason(entry: dict[bytes, bytes]) -> None:
    try:
        env = decode(entry, LIMIT)
    except InvalidEvent as exc:
        reason = str(exc)
        assert reason and len(reason) < 2000, reason[:300]
        assert exc.field is None or len(exc.field) <= 200
    else:
        assert isinstance(env, Envelope)
        assert len(env.payload.model_dump_json().encode()) <= LIMIT
    # The dead-letter copy of any entry is always representable as text.
    text = original_fields(entry)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in text.items())


def test_the_good_entry_decodes() -> None:
    assert decode(GOOD, LIMIT).entity_key == "customer:7"


@given(st.integers(LIMIT + 1, 4 * 1024 * 1024), st.sampled_from([b"payload", b"id", b"junk"]))
@settings(max_examples=10, deadline=None)
def test_oversized_entries_are_rejected_before_parsing(size: int, field: bytes) -> None:
    entry = dict(GOOD)
    entry[field] = b"[" * size
    try:
        decode(entry, LIMIT)
    except PayloadTooLarge as exc:
        assert f"the limit is {LIMIT}" in str(exc)
    else:  # pragma: no cover - would be the bug
        raise AssertionError("an oversized entry was accepted")


def test_decoding_a_flood_of_hostile_entries_keeps_memory_bounded() -> None:
    """10,000 maximal hostile entries decoded one after another: Python's heap does not
    grow with the count (nothing cached per entry, nothing leaked by exceptions)."""
    bad = [{**GOOD, b"payload": b"[" * (LIMIT - 10)}, {**GOOD, b"payload": b'{"a":' * 5000},
           {**GOOD, b"v": b"\xff"}, {**GOOD, b"type": b"x" * 60_000}, {b"junk": b"\x00" * LIMIT}]

    def run(n: int) -> None:
        for i in range(n):
            try:
                decode(bad[i % len(bad)], LIMIT)
            except InvalidEvent:
                pass

    run(500)  # warm caches
    tracemalloc.start()
    try:
        run(2_000)
        after_small, _ = tracemalloc.get_traced_memory()
        run(10_000)
        after_big, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after_big - after_small < 2 * 1024 * 1024, (after_small, after_big)
