"""Hypothesis strategies for hostile stream entries (shared by the wire-level and the
dispatcher-level property tests).

An entry is what ``XREADGROUP`` hands the dispatcher: a mapping of bytes to bytes. The
strategies mix plausible entries with one thing wrong (the interesting cases: they get
far into validation) and pure noise: missing fields, wrong types, huge strings, deep
JSON, invalid UTF-8, duplicate JSON keys, unknown types and versions, unknown fields.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from worker_mesh.events.wire import FIELDS

TYPES = ["customer.created", "customer.updated", "customer.activity", "content.created",
         "content.updated", "content.deleted", "content.requested", "churn.high_risk",
         "model.retrain_requested"]

GOOD = {
    b"id": b"e-1", b"type": b"customer.activity", b"v": b"1", b"key": b"customer:7",
    b"ts": b"2026-11-23T10:00:00+00:00", b"producer": b"test",
    b"payload": b'{"customer_id":"7","logins_30d":3,"active_days_30d":2}',
}

invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80", b"\xf8\x88\x80\x80\x80"])


def _deep_json(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

payloads = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(_deep_json, st.integers(1, 20_000), st.sampled_from(["list", "dict"])),
    st.just(b'{"customer_id":"1","customer_id":"2","logins_30d":1,"active_days_30d":1}'),
    st.just(b'{"customer_id":"1","logins_30d":1e999,"active_days_30d":1}'),
    st.just(b'{"customer_id":"1","logins_30d":' + b"9" * 5000 + b',"active_days_30d":1}'),
    st.integers(1, 300_000).map(lambda n: b'{"customer_id":"' + b"x" * n + b'"}'),
    invalid_utf8,
    st.binary(max_size=200),
)

field_values = st.one_of(
    st.binary(max_size=64), invalid_utf8, st.text(max_size=64).map(str.encode),
    st.integers(0, 200_000).map(lambda n: b"A" * n),
    st.sampled_from([b"", b"0", b"-1", b"999999999", b"1.5", b"nan", b"\x00",
                     b"2026-11-23T10:00:00", b"not-a-time", b"customer:", b":"]),
)


@st.composite
def mutated_entries(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A good entry with a few fields removed, replaced or added."""
    entry = dict(GOOD)
    entry[b"type"] = draw(st.sampled_from(TYPES)).encode()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "replace", "payload", "add", "version"]))
        name = draw(st.sampled_from(FIELDS)).encode()
        if op == "drop":
            entry.pop(name, None)
        elif op == "replace":
            entry[name] = draw(field_values)
        elif op == "payload":
            entry[b"payload"] = draw(payloads)
        elif op == "version":
            entry[b"v"] = draw(st.sampled_from([b"0", b"2", b"99", b"1000000", b"01", b"1 "]))
        else:
            entry[draw(st.binary(min_size=1, max_size=20))] = draw(field_values)
    return entry


noise_entries = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS).map(str.encode), st.binary(min_size=1, max_size=16)),
    field_values, max_size=10,
)

hostile_entries = st.one_of(mutated_entries(), noise_entries)
