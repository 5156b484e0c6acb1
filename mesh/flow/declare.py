"""What a step declares about the shared things it consumes (the authoring surface).

A step says *what* it uses; the budgets themselves live in settings (``flow.limits``,
``flow.concurrency``), so operators tune them without touching code::

    CONTENT_FLOW = Flow(
        limits=(Limit("llm", tokens=lambda a: estimate_tokens(a["brief"])),),
        concurrency=(Concurrency("content.customer", key=lambda a: a["brief"]["customer_id"]),),
        tenant=lambda a: a["brief"].get("customer_id"),
        priority=lambda a: a["brief"].get("priority", "normal"),
    )

Values may be constants or functions of the step's arguments (a mapping of argument
name to value), evaluated when the step is admitted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

T = TypeVar("T")
Args = Mapping[str, Any]
"""A step's arguments by name."""


class Priority(IntEnum):
    """Lower goes first, as in Celery's Redis transport (0 is its highest priority)."""

    URGENT = 0
    """A user is waiting."""
    NORMAL = 1
    BULK = 2
    """Backfills, batch rescoring follow-ups: may wait behind everything else."""

    @classmethod
    def parse(cls, value: object) -> Priority:
        """From a name (``"urgent"``), a member or an int; unknown values are NORMAL."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        if isinstance(value, int) and value in {p.value for p in cls}:
            return cls(value)
        return cls.NORMAL

    @property
    def broker_priority(self) -> int:
        """The Celery message priority for this class on the Redis transport: urgent and
        normal share the transport's default list (0), bulk goes to the list polled
        after it (6), so bulk never delays anything else in the same queue."""
        return 6 if self is Priority.BULK else 0


@dataclass(frozen=True)
class Limit:
    """The step consumes ``requests`` and about ``tokens`` of ``resource`` per call.
    ``tokens`` is an upper estimate (prompt + max output tokens); the step reports the
    real usage afterwards (``Permit.reconcile`` / ``report_usage``)."""

    resource: str
    requests: int = 1
    tokens: int | Callable[[Args], int] = 0


@dataclass(frozen=True)
class Concurrency:
    """At most ``flow.concurrency[name]`` steps run at once per value of ``key``
    (e.g. one content run per customer). ``limit`` overrides the setting."""

    name: str
    key: str | Callable[[Args], str | None]
    limit: int | None = None


@dataclass(frozen=True)
class Flow:
    """Everything a step declares; the empty ``Flow()`` means no flow control."""

    limits: tuple[Limit, ...] = ()
    concurrency: tuple[Concurrency, ...] = ()
    tenant: str | Callable[[Args], str | None] | None = None
    """Fair-share key (tenant, account): a burst of one tenant cannot starve others."""
    priority: Priority | str | Callable[[Args], Any] = Priority.NORMAL

    def __bool__(self) -> bool:
        return bool(self.limits or self.concurrency)


def resolve(value: T | Callable[[Args], T], args: Args) -> T:
    """A declared value: the constant, or the function applied to the step's args."""
    return value(args) if callable(value) else value
