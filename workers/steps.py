"""Steps for a team's own workflows: plain typed functions with a kind, referenced by
object.

::

    @step(kind=API_CALL, resource=Resource.IO)
    def enrich(order: dict) -> dict:
        ctx = current_step()          # run id, workflow, the cause event, the runtime
        ...

    enrich.s(order)                   # a Celery signature (chain with |, group, chord)
    enrich(order)                     # a plain call (unit tests)

The function's parameters are its business inputs: the run's metadata travels in the
message headers (set by the starter) and the task id (``<run_id>:<step>``), and is
available inside the function through ``current_step()``. A step referenced by a name
that does not exist fails at import time (a ``NameError``), not in a worker.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from chains.registry import HEADER_PREFIX, RUN_HEADERS
from gpu_pool.routing import Resource
from workers.kinds import STANDARD, TaskKind, task

if TYPE_CHECKING:
    from celery.canvas import Signature

    from events.base import Event

P = ParamSpec("P")
R = TypeVar("R")



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

        from monitoring import metrics

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
        from events.base import Envelope

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


class Step(Generic[P, R]):
    """A declared step: call it (a plain function call) or make signatures of it."""

    def __init__(self, fn: Callable[P, R], name: str) -> None:
        self.fn = fn
        self.name = name
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature that receives the previous step's result first (in a chain)."""
        from celery import signature

        return signature(self.name, args=args, kwargs=kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature (ignores the previous step's result)."""
        from celery import signature

        return signature(self.name, args=args, kwargs=kwargs, immutable=True)

    def __repr__(self) -> str:
        return f"<step {self.name}>"


def step(fn: Callable[P, R] | None = None, *, name: str | None = None, kind: TaskKind = STANDARD,
         resource: Resource = Resource.CPU, memo: bool = True,
         **options: Any) -> Any:
    """Declare a step. ``name`` defaults to ``<module>.<function>``; ``kind`` sets the
    retry policy (``API_CALL`` honours a 429's Retry-After via ``RateLimited``);
    ``resource`` the queue (CPU -> cpu, IO -> io, GPU -> gpu, GPU_BULK -> gpu-batch);
    ``memo=False`` re-runs the step when its run is re-driven or resumed."""

    def deco(f: Callable[P, R]) -> Step[P, R]:
        full = name or f"{f.__module__}.{f.__qualname__}"
        task(full, kind=kind, resource=resource, memo=memo, runtime=False, **options)(f)
        return Step(f, full)

    return deco(fn) if fn is not None else deco


def enter(ctx: StepContext) -> contextvars.Token[StepContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[StepContext | None]) -> None:
    _current.reset(token)
