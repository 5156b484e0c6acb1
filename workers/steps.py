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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.context import StepContext, current_step
from worker_mesh.workers.kinds import STANDARD, TaskKind, task

if TYPE_CHECKING:
    from celery.canvas import Signature

__all__ = ["Step", "StepContext", "current_step", "step"]

P = ParamSpec("P")
R = TypeVar("R")



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
