"""The running step's context (``current_step()``): what a step knows of its run.

Set by the task wrapper (``workers.kinds``) around every execution; read by a team's
steps, which take only their business inputs as parameters.
"""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker_mesh.chains.registry import HEADER_PREFIX, RUN_HEADERS

if TYPE_CHECKING:
    from worker_mesh.events.base import Event


@dataclass(frozen=True)
class StepContext:
    """What a running step knows of its run (``current_step()``)."""

    run_id: str
    step: str
    workflow: str
    workflow_version: str
    event_type: str
    event_id: str
    retries: int
    runtime: Any
    """The worker process's ``Runtime``: ``redis``, ``settings``, ``keys``, ``service()``."""

    @property
    def meta(self) -> dict[str, str]:
        return {"run_id": self.run_id, "workflow": self.workflow,
                "workflow_version": self.workflow_version, "event_type": self.event_type,
                "event_id": self.event_id}

    def store_result(self, kind: str, entity: str, value: dict[str, Any]) -> None:
        """Store the latest ``kind`` result of ``entity`` (``mesh results get``) with its
        lineage (run, workflow and version, step, cause event), and mark it fresh for
        the staleness alert of that kind (declare the kind: ``@workflow(results=...)``).
        Idempotent: a re-run step writes the same fields."""
        import json
        import time

        from worker_mesh.monitoring import metrics

        rt = self.runtime
        fields = {"value": json.dumps(value, separators=(",", ":"), default=str),
                  "run_id": self.run_id, "workflow": self.workflow,
                  "workflow_version": self.workflow_version, "step": self.step,
                  "event_id": self.event_id, "event_type": self.event_type,
                  "updated_at": f"{time.time():.3f}"}
        rt.redis.hset(rt.keys.result(kind, entity), mapping=fields)
        metrics.bind_store(rt.redis, rt.keys)
        metrics.result_updated(kind, entity)

    def result(self, kind: str, entity: str) -> dict[str, Any] | None:
        """A stored result's value (``store_result``), or None."""
        import json

        raw = self.runtime.redis.hget(self.runtime.keys.result(kind, entity), "value")
        return None if raw is None else json.loads(raw)  # type: ignore[no-any-return]

    def publish(self, event: Event, *, name: str = "") -> str:
        """Publish a follow-up event (a cross-workflow trigger). Its event id derives
        from the run and the step (and ``name``, to publish several), so a re-run step
        publishes the same id and the dispatcher deduplicates it."""
        from worker_mesh.events.base import Envelope

        event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.run_id}:{self.step}:{name}").hex
        env = Envelope.wrap(event, event_id=event_id, producer=f"workflow:{self.workflow}")
        return str(self.runtime.publisher.publish(env))


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "mesh_step", default=None)


def current_step() -> StepContext:
    """The running step's context; raises outside a step (a plain call in a test)."""
    ctx = _current.get()
    if ctx is None:
        raise LookupError("current_step() is only available while a step runs in a worker "
                          "(in a unit test, call the function with its inputs)")
    return ctx


def from_headers(request: Any) -> dict[str, str]:
    """Run metadata from a task request's custom headers ({} when absent)."""
    headers = getattr(request, "headers", None) or {}
    out = {}
    for k in RUN_HEADERS:
        v = headers.get(HEADER_PREFIX + k, getattr(request, HEADER_PREFIX + k, None))
        if v is not None:
            out[k] = str(v)
    return out


def enter(ctx: StepContext) -> contextvars.Token[StepContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[StepContext | None]) -> None:
    _current.reset(token)
