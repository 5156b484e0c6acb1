"""Batched steps on any queue: items arriving for a step run as ONE call of a function
that takes a list.

::

    @batched_task("mesh.churn.score", kind=INFERENCE, batch=BatchPolicy(max_items=64,
                  max_wait_ms=10))
    def score_many(rt, calls: list[Call]) -> list[dict]:      # one predict for all
        ...

Each item is still an ordinary task message with its own task id, so it keeps its own
run (the ``workers.kinds`` wrapper records ``begin``/``step_done`` per item in the run
ledger), its own result (memoized per step), its own retries (per the kind) and its own
place in its chain. The function returns one result per call, in order; a result that is
an exception instance fails that item alone, and a call that raises is retried and then
split by the micro-batcher (``mesh.batching``) until the failing item is isolated.

Items are gathered from the task threads of one worker process: a worker with the
**threads** pool (``-P threads -c N``) batches up to N concurrent items; in a prefork
child or a solo worker a batch is what one task hands over (one item, or a document's
chunks), and it runs at once (nobody else could add to it). Limits come from the
declaration, overridden per step by ``throughput.batch`` in the settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.batching import BatchReport, MicroBatcher
from worker_mesh.monitoring import metrics
from worker_mesh.workers.kinds import STANDARD, TaskKind, task

__all__ = ["BATCHED", "BatchPolicy", "Call", "batched_task", "batcher", "pool_callers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    """How a step's items are gathered (units in the names)."""

    max_items: int = 64
    """Largest batch handed to the function in one call."""
    max_wait_ms: int = 10
    """Longest the first item of a batch waits for more (the freshness a batch costs)."""

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError("BatchPolicy.max_items must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("BatchPolicy.max_wait_ms must be >= 0")


@dataclass(frozen=True)
class Call:
    """One item of a batch: the arguments its task message carried."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


ManyFn = Callable[[Any, list[Call]], Sequence[Any]]


@dataclass(frozen=True)
class BatchedStep:
    name: str
    many: ManyFn
    policy: BatchPolicy


BATCHED: dict[str, BatchedStep] = {}


def batched_task(name: str, *, batch: BatchPolicy, kind: TaskKind = STANDARD,
                 resource: Resource = Resource.CPU, memo: bool = True,
                 **options: Any) -> Callable[[ManyFn], ManyFn]:
    """Declare ``many(rt, calls) -> results`` as the batched step ``name``: its task
    takes one item's arguments, like any task; the items of concurrent tasks are
    gathered into one call of ``many``."""

    def deco(many: ManyFn) -> ManyFn:
        step = BatchedStep(name, many, batch)

        def one(rt: Any, *args: Any, **kwargs: Any) -> Any:
            return batcher(rt, step).map([Call(args, kwargs)],
                                         timeout_s=rt.settings.celery.task_soft_time_limit_s)[0]

        one.__name__ = many.__name__
        one.__doc__ = many.__doc__
        task(name, kind=kind, resource=resource, memo=memo, **options)(one)
        BATCHED[name] = step
        return many

    return deco


def policy_of(rt: Any, step: BatchedStep) -> BatchPolicy:
    """The declared policy with the settings' override for this step (if any)."""
    override = rt.settings.throughput.batch.get(step.name)
    if not override:
        return step.policy
    return BatchPolicy(**({"max_items": step.policy.max_items,
                           "max_wait_ms": step.policy.max_wait_ms} | override))


def batcher(rt: Any, step: BatchedStep) -> MicroBatcher[Call, Any]:
    """The process's batcher for ``step`` (built once per process)."""

    def make(rt_: Any) -> MicroBatcher[Call, Any]:
        pol = policy_of(rt_, step)
        return MicroBatcher(step.name, lambda calls: step.many(rt_, calls),
                            max_batch=pol.max_items, max_wait_ms=pol.max_wait_ms,
                            retries=rt_.settings.gpu.batch_retries, on_batch=_report,
                            max_callers=pool_callers())

    return rt.service(f"batched.{step.name}", make)


def _report(rep: BatchReport) -> None:
    metrics.step_batch(rep.task_type, rep.size, rep.wait_s)


# -- how many task threads can wait on a batcher in this process ---------------------------
_pool: dict[str, int] = {}


def pool_callers() -> int | None:
    """Task threads of this worker process that can be waiting on one batcher at once:
    the concurrency of a threads (or green) pool, 1 in a prefork child or a solo worker;
    None outside a worker (then a batch waits for its size or ``max_wait_ms``)."""
    return _pool.get("callers")


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    cls = getattr(sender, "pool_cls", None)
    module = getattr(cls, "__module__", str(cls))
    threaded = any(word in module for word in ("thread", "gevent", "eventlet"))
    _pool["callers"] = int(getattr(sender, "concurrency", 1) or 1) if threaded else 1


signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="mesh-batched-pool")
