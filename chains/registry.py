"""The event -> workflow registry.

A workflow is one module in ``chains/`` with one decorator::

    @workflow("churn", on=[On("customer.updated"), On("customer.activity")],
              version="1", coalesce=Coalesce(window_s=2, max_wait_s=10), sla_s=3600)
    def build(env: Envelope, ctx: RunContext) -> Signature:
        return chain(ctx.sig("mesh.churn.features", ...), ...)

The dispatcher (``events``) sees the registry only through the ``Router`` and
``WorkflowStarter`` protocols, so ``events`` never imports Celery.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker_mesh.events.base import Envelope
from worker_mesh.events.routing import Coalesce, Route

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

__all__ = ["REGISTRY", "Coalesce", "On", "Route", "RunContext", "Workflow", "WorkflowRegistry",
           "workflow"]

RUN_NAMESPACE = uuid.UUID("6f1d3a52-8b0e-4c1e-9b55-3e0c8f2a7d10")
HEADER_PREFIX = "mesh_"
"""Run metadata travels in the message headers of every task of a run:
``mesh_workflow``, ``mesh_workflow_version``, ``mesh_event_type``, ``mesh_event_id``
(a step's parameters are its business inputs; ``workers.steps.current_step()``)."""
RUN_HEADERS = ("workflow", "workflow_version", "event_type", "event_id")


@dataclass(frozen=True)
class On:
    """A trigger: an event type, and an optional filter on the envelope."""

    event_type: str
    where: Callable[[Envelope], bool] | None = None
    description: str = ""

    def matches(self, env: Envelope) -> bool:
        return env.type == self.event_type and (self.where is None or bool(self.where(env)))


@dataclass(frozen=True)
class RunContext:
    """What a canvas builder gets besides the event: the app, the run id, run metadata."""

    app: Celery
    run_id: str
    workflow: str
    version: str
    coalesced: int = 1
    """How many events this run stands for (1 unless coalesced)."""
    event_type: str = ""
    """Type of the event that caused the run (Sentry tags, dead letters)."""

    event_id: str = ""
    """Id of the event that caused the run."""

    @property
    def meta(self) -> dict[str, Any]:
        """JSON metadata every task of the run receives and stores with its results."""
        meta = {"run_id": self.run_id, "workflow": self.workflow, "workflow_version": self.version}
        if self.event_type:
            meta["event_type"] = self.event_type
        if self.event_id:
            meta["event_id"] = self.event_id
        return meta

    @property
    def headers(self) -> dict[str, str]:
        """The message headers carrying this run's metadata."""
        meta = self.meta
        return {HEADER_PREFIX + k: str(meta.get(k, "")) for k in RUN_HEADERS}

    def sig(self, task_name: str, *args: Any, step: str | None = None, **kwargs: Any) -> Signature:
        """A signature by task name (chains never import task code), with a
        deterministic task id ``<run_id>:<step>`` so a re-sent run reuses its ids."""
        return self.app.signature(
            task_name, args=args, kwargs=kwargs,
            task_id=f"{self.run_id}:{step or task_name.rsplit('.', 1)[-1]}",
        )


Builder = Callable[[Envelope, RunContext], "Signature"]


@dataclass(frozen=True)
class Workflow:
    name: str
    version: str
    triggers: tuple[On, ...]
    build: Builder
    coalesce: Coalesce | None = None
    sla_s: int = 3600
    """Freshness SLA: a success is expected at least this often (alerts and status)."""
    description: str = ""
    results: tuple[tuple[str, int], ...] = ()
    """Result kinds the workflow stores (``current_step().store_result``), each with the
    age (s) past which a stored result is stale (``mesh_result_max_age_seconds``)."""

    def run_id(self, env: Envelope, attempt: str = "") -> str:
        """uuid5 of (workflow, event id[, attempt]): the same event always maps to the
        same run (so a redelivered entry reuses its task ids); a DLQ replay is a new
        attempt and so a new run."""
        seed = f"{self.name}:{env.event_id}" + (f":{attempt}" if attempt else "")
        return str(uuid.uuid5(RUN_NAMESPACE, seed))


@dataclass
class WorkflowRegistry:
    """Workflows by name. ``REGISTRY`` is the default; tests may build their own."""

    workflows: dict[str, Workflow] = field(default_factory=dict)

    def add(self, wf: Workflow) -> Workflow:
        if wf.name in self.workflows and self.workflows[wf.name].build is not wf.build:
            raise ValueError(f"workflow {wf.name!r} is registered twice")
        self.workflows[wf.name] = wf
        return wf

    def workflow(
        self,
        name: str,
        *,
        on: Sequence[On | str],
        version: str = "1",
        coalesce: Coalesce | None = None,
        sla_s: int = 3600,
        description: str = "",
        results: dict[str, int] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``build``: ``build(env, ctx)`` (the envelope and the run context) or
        ``build(event)`` (the typed event alone). ``on``: event types or ``On(...)``
        triggers; ``results``: result kind -> max age (s) for the staleness alert."""

        def deco(build: Callable[..., Any]) -> Callable[..., Any]:
            triggers = tuple(t if isinstance(t, On) else On(t) for t in on)
            self.add(Workflow(name, version, triggers, _two_args(build), coalesce, sla_s,
                              description or (build.__doc__ or "").strip().split("\n")[0],
                              tuple(sorted((results or {}).items()))))
            return build

        return deco

    def get(self, name: str) -> Workflow:
        return self.workflows[name]

    # -- Router protocol (used by the dispatcher) -------------------------------------
    def route(self, env: Envelope) -> list[Route]:
        return [Route(wf.name, wf.coalesce) for wf in self.workflows.values()
                if any(t.matches(env) for t in wf.triggers)]

    def __iter__(self) -> Iterator[Workflow]:
        return iter(sorted(self.workflows.values(), key=lambda w: w.name))


def _two_args(build: Callable[..., Any]) -> Builder:
    """``build(event)`` adapted to the ``build(env, ctx)`` the starter calls."""
    import inspect

    try:
        params = [p for p in inspect.signature(build).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return build
    if len(params) != 1:
        return build

    def adapted(env: Envelope, ctx: RunContext) -> Signature:
        return build(env.payload)  # type: ignore[no-any-return]

    adapted.__module__ = getattr(build, "__module__", adapted.__module__)
    adapted.__doc__ = build.__doc__
    adapted.__wrapped__ = build  # type: ignore[attr-defined]
    return adapted


REGISTRY = WorkflowRegistry()
workflow = REGISTRY.workflow
