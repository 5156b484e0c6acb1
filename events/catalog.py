"""The event types of the first workflows, and the catalog that maps wire type names
(and schema versions) to classes.

A new event type is one class with ``@register``; the dispatcher, the JSON Schema
export and the docs pick it up from the catalog.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, TypeVar

from pydantic import Field

from worker_mesh.events import base as _base
from worker_mesh.events.base import Event
from worker_mesh.mesh.errors import InvalidEvent, UnknownEventType

E = TypeVar("E", bound=type[Event])


class EventCatalog:
    """Type name -> {schema version -> class}. The default catalog is ``CATALOG``;
    tests and embedders may build their own."""

    def __init__(self) -> None:
        self._types: dict[str, dict[int, type[Event]]] = {}

    def register(self, cls: E) -> E:
        versions = self._types.setdefault(cls.event_type, {})
        if cls.schema_version in versions and versions[cls.schema_version] is not cls:
            raise ValueError(f"{cls.event_type} v{cls.schema_version} is registered twice")
        versions[cls.schema_version] = cls
        return cls

    def get(self, type_name: str, version: int) -> type[Event]:
        versions = self._types.get(type_name)
        if versions is None:
            raise UnknownEventType(f"unknown event type {type_name!r}", field="type")
        cls = versions.get(version)
        if cls is None:
            known = ", ".join(str(v) for v in sorted(versions))
            raise InvalidEvent(
                f"unsupported schema version {version} of {type_name!r} (known: {known})",
                field="v",
            )
        return cls

    def types(self) -> list[type[Event]]:
        return [cls for versions in self._types.values() for cls in versions.values()]

    def names(self) -> list[str]:
        return sorted(self._types)


CATALOG = EventCatalog()
register = CATALOG.register
for _cls in _base._defined:  # event types defined before this module was imported
    CATALOG.register(_cls)
_base._on_define.append(CATALOG.register)

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Plan = Literal["free", "starter", "pro", "enterprise"]


# -- customers -----------------------------------------------------------------------
@register
class CustomerCreated(Event):
    """A customer signed up. Carries the full profile the churn model reads."""

    event_type = "customer.created"
    entity_kind = "customer"
    entity_field = "customer_id"

    customer_id: Id
    plan: Plan
    seats: int = Field(ge=1, le=1_000_000)
    mrr: float = Field(ge=0, description="monthly recurring revenue, in the account currency")
    signup_date: date
    country: str = Field(default="US", min_length=2, max_length=2)


@register
class CustomerUpdated(Event):
    """Some profile fields changed; only the changed fields are given."""

    event_type = "customer.updated"
    entity_kind = "customer"
    entity_field = "customer_id"

    customer_id: Id
    plan: Plan | None = None
    seats: int | None = Field(default=None, ge=1, le=1_000_000)
    mrr: float | None = Field(default=None, ge=0)
    nps: int | None = Field(default=None, ge=0, le=10, description="last NPS answer, 0-10")
    version: int = Field(default=1, ge=1, description="profile version after the change")


@register
class CustomerActivity(Event):
    """Rolling usage counters of a customer (as computed by the product analytics)."""

    event_type = "customer.activity"
    entity_kind = "customer"
    entity_field = "customer_id"

    customer_id: Id
    logins_30d: int = Field(ge=0, le=1_000_000)
    active_days_30d: int = Field(ge=0, le=30)
    support_tickets_30d: int = Field(default=0, ge=0, le=100_000)
    failed_payments_90d: int = Field(default=0, ge=0, le=1000)


# -- content -------------------------------------------------------------------------
@register
class ContentCreated(Event):
    event_type = "content.created"
    entity_kind = "content"
    entity_field = "content_id"

    content_id: Id
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(max_length=200_000)
    version: int = Field(default=1, ge=1)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)


@register
class ContentUpdated(Event):
    event_type = "content.updated"
    entity_kind = "content"
    entity_field = "content_id"

    content_id: Id
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(max_length=200_000)
    version: int = Field(ge=1)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)
    source: str | None = Field(default=None, max_length=64, description="e.g. 'generated'")


@register
class ContentDeleted(Event):
    event_type = "content.deleted"
    entity_kind = "content"
    entity_field = "content_id"

    content_id: Id


@register
class ContentRequested(Event):
    """Somebody asks for a piece of content to be generated."""

    event_type = "content.requested"
    entity_kind = "content"
    entity_field = "content_id"

    content_id: Id
    topic: str = Field(min_length=1, max_length=500)
    keywords: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    audience: str = Field(default="customers", max_length=100)
    min_words: int = Field(default=120, ge=10, le=5000)
    customer_id: Id | None = None
    """The customer (account) it is for: the fair-share key of the LLM budget and the
    concurrency key (``flow.concurrency["content.customer"]``)."""
    priority: Literal["urgent", "normal", "bulk"] = "normal"
    """``urgent``: a user is waiting, goes ahead of the rest; ``bulk``: may wait
    behind everything else (docs/flow-control.md)."""


# -- churn and models ------------------------------------------------------------------
@register
class ChurnHighRisk(Event):
    """A customer's churn score crossed the high-risk threshold."""

    event_type = "churn.high_risk"
    entity_kind = "customer"
    entity_field = "customer_id"

    customer_id: Id
    score: float = Field(ge=0, le=1)
    model_version: str = Field(min_length=1, max_length=128)
    plan: Plan | None = None


@register
class ModelRetrainRequested(Event):
    event_type = "model.retrain_requested"
    entity_kind = "model"
    entity_field = "model"

    model: Literal["churn"] = "churn"
    reason: str = Field(default="on demand", max_length=500)
    samples: int = Field(default=4000, ge=200, le=1_000_000)
