"""Decoding stream entries: every rejection names the offending field."""

from __future__ import annotations

import json

import pytest

from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerUpdated
from worker_mesh.events.wire import FIELDS, decode, encode, original_fields, schema
from worker_mesh.mesh.errors import InvalidEvent, PayloadTooLarge, UnknownEventType

LIMIT = 4096


def _good(**over: str) -> dict[bytes, bytes]:
    env = Envelope.wrap(CustomerUpdated(customer_id="42", plan="pro", version=3),
                        idempotency_key="c42-v3", producer="crm")
    fields = {**encode(env, LIMIT), **over}
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_round_trip() -> None:
    env = decode(_good(), LIMIT)
    assert env.type == "customer.updated" and env.entity_key == "customer:42"
    assert env.idempotency_key == "c42-v3" and env.producer == "crm"
    assert isinstance(env.payload, CustomerUpdated) and env.payload.plan == "pro"


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"payload": '{"customer_id":"42","plan":"gold"}'}, "plan", "payload.plan"),
        ({"payload": '{"customer_id":"42","seats":"many"}'}, "seats", "payload.seats"),
        ({"payload": '{"customer_id":"42","colour":"red"}'}, "colour", "payload.colour"),
        ({"payload": '{"plan":"pro"}'}, "customer_id", "payload.customer_id"),
        ({"payload": "not json"}, None, "invalid customer.updated"),
        ({"v": "two"}, "v", "'v'"),
        ({"v": "9"}, "v", "unsupported schema version 9"),
        ({"ts": "last tuesday"}, "ts", "'ts'"),
        ({"ts": "2026-11-23T10:00:00"}, "ts", "time zone"),
        ({"key": "customer:43"}, "key", "'key'"),
        ({"extra": "1"}, "extra", "unknown field"),
    ],
)
def test_invalid_entries_name_the_field(over: dict[str, str], field: str | None, words: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(_good(**over), LIMIT)
    assert words in str(info.value)
    if field is not None:
        assert info.value.field == field


@pytest.mark.parametrize("name", ["id", "type", "v", "ts", "payload"])
def test_missing_required_field(name: str) -> None:
    fields = _good()
    del fields[name.encode()]
    with pytest.raises(InvalidEvent, match=f"missing field '{name}'") as info:
        decode(fields, LIMIT)
    assert info.value.field == name


def test_unknown_type_and_too_large_have_their_own_errors() -> None:
    with pytest.raises(UnknownEventType, match=r"customer\.exploded"):
        decode(_good(type="customer.exploded"), LIMIT)
    big = json.dumps({"customer_id": "42", "plan": "pro", "x": "y" * LIMIT})
    with pytest.raises(PayloadTooLarge, match="limit is 4096") as info:
        decode(_good(payload=big), LIMIT)
    assert info.value.field == "payload"


def test_non_utf8_is_rejected_and_kept_losslessly_for_the_dlq() -> None:
    fields = _good()
    fields[b"producer"] = b"\xff\xfe"
    with pytest.raises(InvalidEvent, match="'producer' is not valid UTF-8"):
        decode(fields, LIMIT)
    assert original_fields(fields)["producer"] == "\\xff\\xfe"


def test_replay_field_is_accepted_and_optional() -> None:
    assert "replay" in FIELDS
    assert decode(_good(replay="1700000000000-0"), LIMIT).event_id


def test_schema_covers_every_type_with_the_entity_key() -> None:
    doc = schema()
    events = doc["events"]
    assert isinstance(events, dict)
    assert "customer.updated@1" in events
    assert events["customer.updated@1"]["x-entity-key"] == "customer:<customer_id>"
    assert events["customer.updated@1"]["additionalProperties"] is False


def test_a_huge_type_name_gives_a_short_reason() -> None:
    with pytest.raises(UnknownEventType) as info:
        decode(_good(type="A" * 3000), LIMIT)
    assert len(str(info.value)) < 200 and "3000 characters" in str(info.value)


@pytest.mark.parametrize("name", ["id", "type", "junk"])
def test_any_field_past_the_limit_is_too_large(name: str) -> None:
    with pytest.raises(PayloadTooLarge, match="the limit is 4096") as info:
        decode({**_good(), name.encode(): b"x" * (LIMIT + 1)}, LIMIT)
    assert info.value.field == name
