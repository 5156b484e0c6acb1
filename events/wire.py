"""The wire format of an event in a Redis stream: flat string fields, JSON payload.

=========  ======================================================================
field      value
=========  ======================================================================
id         event id (any unique string, <= 128 chars; uuid4 hex by default)
type       event type, e.g. ``customer.updated``
v          schema version of that type, decimal (``1``)
key        entity key, ``<kind>:<id>`` (``customer:42``); partitioning and ordering
idem       idempotency key; events with the same key within the dedupe TTL run once
ts         when it happened, ISO 8601 with a zone (``2026-11-23T10:00:00Z``)
producer   who published it (service name)
payload    the event's fields as one JSON object (UTF-8)
replay     optional, set only by ``mesh dlq replay``: the dead-letter entry id this is a
           replay of (dedupe and run ids then treat it as a new attempt)
route      optional, set only by ``mesh dlq replay``: start only this workflow
=========  ======================================================================

Validation is strict, so that the runtime accepts exactly what ``mesh events schema``
publishes: an integer field refuses ``"3"`` and ``true``; ``Infinity``, ``NaN`` and
numbers that overflow to infinity are refused; a JSON object with a key repeated with
a different value, and a stream entry with a field repeated with a different value, are
refused (which one would win depends on the parser); a ``ts`` further in the future
than ``streams.max_future_s`` is refused (it would pin "latest" state forever).
``replay``/``route`` are honoured only with a replay grant (``events.dlq``).

The stream of an event is ``{<prefix>:p<N>}:events`` with ``N = crc32(key) % partitions``
(``{mesh:p0}:events`` with the defaults). Any language can publish with ``XADD``; see
README.md. Nothing here is pickled or otherwise code-executing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CATALOG, EventCatalog
from worker_mesh.mesh.errors import InvalidEvent, PayloadTooLarge, UnknownEventType

FIELDS = ("id", "type", "v", "key", "idem", "ts", "producer", "payload", "replay", "route")
REQUIRED = ("id", "type", "v", "ts", "payload")
REPEATED = b"\x00repeated"
"""Marker field set by the dispatcher's stream parser when an entry repeats a field
with different values (Redis streams allow it; a dict keeps only one)."""


def encode(env: Envelope, max_bytes: int) -> dict[str, str]:
    """Stream fields of ``env``; raises PayloadTooLarge past ``max_bytes``."""
    payload = env.payload.model_dump_json(exclude_none=True)
    if len(payload) > max_bytes:  # chars <= bytes; exact check only when close
        size = len(payload.encode("utf-8"))
        if size > max_bytes:
            raise PayloadTooLarge(
                f"{env.type} payload is {size} bytes, the limit is {max_bytes} "
                "(streams.max_payload_bytes)",
                field="payload",
            )
    return {
        "id": env.event_id,
        "type": env.type,
        "v": str(env.schema_version),
        "key": env.entity_key,
        "idem": env.idempotency_key,
        "ts": env.occurred_at.isoformat(),
        "producer": env.producer,
        "payload": payload,
    }


def _text(fields: Mapping[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"field {name!r} is not valid UTF-8", field=name) from exc


def decode(
    fields: Mapping[bytes, bytes], max_bytes: int, catalog: EventCatalog = CATALOG,
    *, max_future_s: float | None = None, now: datetime | None = None,
) -> Envelope:
    """Validate a raw stream entry and build its envelope.

    Raises InvalidEvent (or a subclass) whose message names the offending field.
    """
    if REPEATED in fields:
        name = fields[REPEATED].decode("utf-8", "replace")[:64]
        raise InvalidEvent(f"field {name!r} is repeated in the entry with different values",
                           field=name)
    size = sum(len(k) + len(v) for k, v in fields.items())
    if size > max_bytes + 2048:
        raise PayloadTooLarge(f"entry is {size} bytes, the limit is {max_bytes}", field="payload")
    for k, v in fields.items():
        if len(v) > max_bytes:  # any one field past the limit: too large, whatever it is
            name = k.decode("utf-8", "replace")[:64]
            raise PayloadTooLarge(f"field {name!r} is {len(v)} bytes, the limit is {max_bytes}",
                                  field=name)
    for name in REQUIRED:
        if name.encode() not in fields:
            raise InvalidEvent(f"missing field {name!r}", field=name)
    unknown = [k for k in fields if k.decode("utf-8", "replace") not in FIELDS]
    if unknown:
        names = ", ".join(repr(k.decode("utf-8", "replace")[:64]) for k in unknown[:5])
        raise InvalidEvent(f"unknown field(s) {names}", field=unknown[0].decode("utf-8", "replace")[:64])
    type_name = _text(fields, "type") or ""
    if len(type_name) > 128:  # no catalog type is that long; keep the reason short
        raise UnknownEventType(f"unknown event type {type_name[:64]!r}... "
                               f"({len(type_name)} characters)", field="type")
    v_text = _text(fields, "v") or ""
    if not v_text.isdigit() or len(v_text) > 6:
        raise InvalidEvent(f"field 'v' must be a positive integer, got {v_text[:32]!r}", field="v")
    cls = catalog.get(type_name, int(v_text))
    payload_raw = fields[b"payload"]
    if len(payload_raw) > max_bytes:
        raise PayloadTooLarge(
            f"payload is {len(payload_raw)} bytes, the limit is {max_bytes}", field="payload"
        )
    _check_json(payload_raw)
    try:
        payload = cls.model_validate_json(payload_raw, strict=True)
    except ValidationError as exc:
        raise InvalidEvent(_payload_error(type_name, exc), field=_first_loc(exc)) from None
    entity_key = payload.entity_key()
    key_text = _text(fields, "key")
    if key_text is not None and key_text != entity_key:
        raise InvalidEvent(
            f"field 'key' is {key_text[:128]!r} but the payload is about {entity_key!r}", field="key"
        )
    ts_text = _text(fields, "ts") or ""
    try:
        occurred_at = datetime.fromisoformat(ts_text)
    except ValueError:
        raise InvalidEvent(f"field 'ts' is not an ISO 8601 time: {ts_text[:64]!r}", field="ts") from None
    if occurred_at.tzinfo is None:
        raise InvalidEvent("field 'ts' has no time zone", field="ts")
    if max_future_s is not None:
        limit = (now or datetime.now(UTC)) + timedelta(seconds=max_future_s)
        if occurred_at > limit:
            raise InvalidEvent(f"field 'ts' is {ts_text[:40]!r}, more than {max_future_s:g} s in "
                               "the future (streams.max_future_s)", field="ts")
    event_id = _text(fields, "id") or ""
    try:
        return Envelope(
            event_id=event_id,
            type=type_name,
            schema_version=cls.schema_version,
            entity_key=entity_key,
            idempotency_key=_text(fields, "idem") or event_id,
            occurred_at=occurred_at,
            producer=_text(fields, "producer") or "unknown",
            payload=payload,
        )
    except ValidationError as exc:
        raise InvalidEvent(_payload_error(type_name, exc, prefix=""), field=_first_loc(exc)) from None


def _check_json(raw: bytes) -> None:
    """Refuse what a JSON parser may read differently from the next one: repeated keys
    with different values, ``Infinity``/``NaN``, numbers that overflow to infinity."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out and out[k] != v:
                raise InvalidEvent(f"payload.{k[:64]}: the key is repeated with different values",
                                   field=f"payload.{k[:64]}")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise InvalidEvent(f"payload: {name} is not a number JSON allows", field="payload")

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise InvalidEvent(f"payload: {text[:32]} overflows to infinity", field="payload")
        return value

    try:
        json.loads(raw, object_pairs_hook=pairs, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError):
        return  # not JSON at all: pydantic names the problem


def _first_loc(exc: ValidationError) -> str:
    errs = exc.errors()
    return ".".join(str(p) for p in errs[0]["loc"]) if errs else "payload"


def _payload_error(type_name: str, exc: ValidationError, prefix: str = "payload.") -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{prefix}{loc}: {err['msg']}")
    return f"invalid {type_name}: " + "; ".join(parts)


def original_fields(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    """The entry's fields as text for the dead-letter stream (bytes kept lossless as
    ``\\x..`` escapes where they are not UTF-8)."""
    return {
        k.decode("utf-8", "backslashreplace"): v.decode("utf-8", "backslashreplace")
        for k, v in fields.items()
    }


def schema(catalog: EventCatalog = CATALOG) -> dict[str, object]:
    """JSON Schema of every event payload, keyed by ``type@v``."""
    out: dict[str, object] = {}
    for cls in sorted(catalog.types(), key=lambda c: (c.event_type, c.schema_version)):
        s = cls.model_json_schema()
        s["x-event-type"] = cls.event_type
        s["x-schema-version"] = cls.schema_version
        s["x-entity-key"] = f"{cls.entity_kind}:<{cls.entity_field}>"
        out[f"{cls.event_type}@{cls.schema_version}"] = s
    return {"$comment": "Worker Mesh event payloads; see events/wire.py for the envelope",
            "events": out, "envelope_fields": list(FIELDS)}
