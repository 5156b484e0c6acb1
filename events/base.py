"""The event envelope and the base class of typed events.

An *event* is a pydantic model holding the payload (``CustomerUpdated(customer_id=...)``).
The *envelope* carries what every event has: id, type, schema version, entity key,
idempotency key, time, producer. Unknown fields and wrong types are rejected, and the
error names the field.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


def new_event_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every typed event (the payload). Subclasses set the class variables."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=1_000_000,
                              allow_inf_nan=False)
    """``allow_inf_nan=False``: ``Infinity``, ``NaN`` and numbers that overflow to
    infinity are refused (a score of ``inf`` is no data). The dispatcher also validates
    payloads strictly (``events.wire.decode``): a ``"3"`` or ``true`` for an integer is
    refused there, as the published JSON Schema says."""

    event_type: ClassVar[str]
    """Dotted type name on the wire, e.g. ``customer.updated``."""
    schema_version: ClassVar[int] = 1
    entity_kind: ClassVar[str]
    """Kind of entity the event is about (``customer``, ``content``...)."""
    entity_field: ClassVar[str]
    """Payload field holding the entity's id."""

    def entity_key(self) -> str:
        """``<kind>:<id>``: the partitioning, ordering and coalescing key."""
        return f"{self.entity_kind}:{getattr(self, self.entity_field)}"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that names its ``event_type`` joins the default catalog, so a
        team's event types need no registration call (the dispatcher decodes them)."""
        super().__init_subclass__(**kwargs)
        if "event_type" in cls.__dict__ and not cls.__name__.startswith("_"):
            _defined.append(cls)
            for hook in _on_define:
                hook(cls)


_defined: list[type[Event]] = []
"""Event types defined so far (``events.catalog`` registers them, and later ones through
``_on_define``)."""
_on_define: list[Any] = []


class Envelope(BaseModel):
    """One event with its metadata, as published and as read back by the dispatcher."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=128)
    type: str
    schema_version: int
    entity_key: str = Field(min_length=1, max_length=512)
    idempotency_key: str = Field(min_length=1, max_length=512)
    occurred_at: datetime
    producer: str = Field(default="app", min_length=1, max_length=128)
    payload: Event

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("occurred_at must carry a time zone (use UTC)")
        return v

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        idempotency_key: str | None = None,
        producer: str = "app",
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """Put ``event`` in an envelope. Without an idempotency key the event id is used,
        so only events a producer marks as the same (same key) are deduplicated."""
        eid = event_id or new_event_id()
        return cls.model_construct(
            event_id=eid,
            type=event.event_type,
            schema_version=event.schema_version,
            entity_key=event.entity_key(),
            idempotency_key=idempotency_key or eid,
            occurred_at=occurred_at or utcnow(),
            producer=producer,
            payload=event,
        )

    def summary(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "type": self.type, "entity_key": self.entity_key}
