"""What the dispatcher needs from the workflow side, as protocols and small dataclasses.

``events`` never imports Celery or ``chains``: ``chains.registry.WorkflowRegistry``
implements ``Router`` and ``chains.starter.CeleryStarter`` implements
``WorkflowStarter``; the dispatcher is handed both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from worker_mesh.events.base import Envelope


@dataclass(frozen=True)
class Coalesce:
    """Debounce per (workflow, entity key): run once ``window_s`` after the last event,
    but no later than ``max_wait_s`` after the first one held."""

    window_s: float
    max_wait_s: float

    def __post_init__(self) -> None:
        if not (0 < self.window_s <= self.max_wait_s):
            raise ValueError("need 0 < window_s <= max_wait_s")


@dataclass(frozen=True)
class Route:
    """One workflow an event should start (what the dispatcher needs to know)."""

    workflow: str
    coalesce: Coalesce | None = None


@dataclass(frozen=True)
class StartRequest:
    """One run to hand to the workflow engine."""

    workflow: str
    env: Envelope
    run_id: str
    coalesced: int = 1
    """How many events this run stands for (1 unless coalesced)."""
    fields: dict[str, str] | None = None
    """The event's wire fields, so that a run that finally fails can be dead-lettered
    (and replayed) as the very event that started it."""
    resume_of: str = ""
    """A failed run this one resumes (a dead-letter replay): its succeeded steps are
    not run again."""


class Router(Protocol):
    def route(self, env: Envelope) -> list[Route]:
        """The workflows ``env`` should start (empty: none is interested)."""
        ...


class WorkflowStarter(Protocol):
    def run_id(self, workflow: str, env: Envelope, attempt: str = "") -> str:
        """Deterministic run id of ``workflow`` for ``env`` (``attempt`` distinguishes
        a replay from the original)."""
        ...

    def start_many(self, reqs: Sequence[StartRequest]) -> list[str | None]:
        """Start the runs; returns, per request, None or why it could not be built
        (a permanent problem of that one event). Raises ``BrokerUnavailable`` when
        the broker cannot be reached (then nothing is acknowledged and all is retried)."""
        ...


class RunResender(Protocol):
    def resend(self, run_id: str, canvas: str) -> None:
        """Hand a run's recorded canvas (JSON) to the broker again (the re-driver)."""
        ...
