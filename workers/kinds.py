"""Task kinds and their retry policies, and the ``@task`` decorator.

A task is a thin wrapper around a plain typed function. Its *kind* says how it fails:

============  =======  =================  ==========================================
kind          retries  delays             notes
============  =======  =================  ==========================================
api_call      6        1 s .. 60 s        exponential, full jitter; honours
                                          Retry-After (``RateLimited.delay_s``)
inference     2        0.5 s .. 5 s       a model call: quick retries
training      2        60 s .. 15 min     long and expensive: few, slow retries
standard      3        2 s .. 60 s        plain CPU/IO work
critical      0        -                  never retried; reported at once
============  =======  =================  ==========================================

``PermanentError`` (bad input, missing entity) is never retried: the task fails fast.
``TransientError`` is retried per the kind. Any other exception is retried like a
transient one unless the kind says otherwise (``retry_unexpected``).

A run's last task also records the run's success: the starter passes it the reserved
keyword argument ``_mesh_finish`` (``FINISH_KWARG``: ``{"meta": ..., "started_at": ...}``),
which the wrapper pops before calling the function and, once the function returned,
records with ``workers.runstats.record_success`` (once per run, however often the task
is redelivered). Should that fail (Redis unreachable), the bookkeeping is handed to the
``mesh.run.finished`` task (its own retries, the task's error callbacks), as the starter
does for runs that end in a group or chord.

Tasks are declared without an app (``@task(...)`` records a ``TaskSpec``) and bound to
an app by ``register_tasks(app)``, so the same module serves any number of apps.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpu_pool.routing import Resource, queue_for
from mesh.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from celery import Celery, Task

log = logging.getLogger("mesh.kinds")

FINISH_KWARG = "_mesh_finish"
"""Reserved keyword argument: the run's bookkeeping, for the run's last task."""
FINISHED_TASK = "mesh.run.finished"


@dataclass(frozen=True)
class TaskKind:
    name: str
    max_retries: int
    backoff_s: float
    backoff_max_s: float
    jitter: bool = True
    retry_unexpected: bool = True
    report_at_once: bool = False
    """Report the first failure to Sentry/alerts immediately (critical work)."""
    time_limit_s: int | None = 600
    """Hard time limit of one execution (soft limit 30 s earlier); None: the global
    ``celery.task_time_limit_s`` (training). Short limits matter beyond runaway tasks:
    a worker's main process keeps a timer per task until its hard limit, so its memory
    plateaus at about rate x limit (see docs/reliability.md)."""

    def delay_s(self, retries_so_far: int, hint_s: float | None = None,
                rng: random.Random | None = None) -> float:
        """The wait before retry number ``retries_so_far + 1``.

        A hint (Retry-After) wins when given, capped at ``backoff_max_s``; otherwise
        exponential backoff, with full jitter when ``jitter`` is set.
        """
        if hint_s is not None and hint_s >= 0:
            return min(hint_s, self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_s * (2 ** retries_so_far))
        if not self.jitter:
            return ceiling
        r = rng or random
        return self.backoff_s / 2 + r.random() * (ceiling - self.backoff_s / 2)


API_CALL = TaskKind("api_call", max_retries=6, backoff_s=1.0, backoff_max_s=60.0)
INFERENCE = TaskKind("inference", max_retries=2, backoff_s=0.5, backoff_max_s=5.0)
TRAINING = TaskKind("training", max_retries=2, backoff_s=60.0, backoff_max_s=900.0,
                    time_limit_s=None)
STANDARD = TaskKind("standard", max_retries=3, backoff_s=2.0, backoff_max_s=60.0)
CRITICAL = TaskKind("critical", max_retries=0, backoff_s=0.0, backoff_max_s=0.0,
                    jitter=False, retry_unexpected=False, report_at_once=True)
KINDS = {k.name: k for k in (API_CALL, INFERENCE, TRAINING, STANDARD, CRITICAL)}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable[..., Any]
    kind: TaskKind
    resource: Resource
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        return queue_for(self.resource)


SPECS: dict[str, TaskSpec] = {}


def task(name: str, *, kind: TaskKind = STANDARD, resource: Resource = Resource.CPU,
         **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare ``fn(rt, *args, **kwargs)`` as task ``name``. ``rt`` is the process's
    ``Runtime`` (clients, stores, models), injected by the wrapper; tests call ``fn``
    directly with a runtime of their own."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in SPECS and SPECS[name].fn is not fn:
            raise ValueError(f"task {name!r} is declared twice")
        SPECS[name] = TaskSpec(name, fn, kind, resource, options)
        return fn

    return deco


def register_tasks(app: Celery, specs: dict[str, TaskSpec] | None = None) -> None:
    """Bind every declared task to ``app``, with its queue and retry policy."""
    from workers.runtime import runtime_for

    for spec in (specs or SPECS).values():
        _bind(app, spec, runtime_for)


def _bind(app: Celery, spec: TaskSpec, runtime_for: Callable[[Celery], Any]) -> None:
    kind = spec.kind

    def run(self: Task, *args: Any, **kwargs: Any) -> Any:
        finish = kwargs.pop(FINISH_KWARG, None)  # a copy: a retry still carries it
        rt = runtime_for(self.app)
        try:
            result = spec.fn(rt, *args, **kwargs)
        except PermanentError:
            raise
        except TransientError as exc:
            if self.request.retries >= kind.max_retries:
                raise
            raise self.retry(exc=exc, countdown=kind.delay_s(self.request.retries, exc.delay_s),
                             max_retries=kind.max_retries) from None
        except Exception as exc:
            if not kind.retry_unexpected or self.request.retries >= kind.max_retries:
                raise
            raise self.retry(exc=exc, countdown=kind.delay_s(self.request.retries),
                             max_retries=kind.max_retries) from None
        if finish is not None:
            _record_finish(self, rt, finish)
        return result

    run.__name__ = spec.fn.__name__
    run.__doc__ = spec.fn.__doc__
    limits: dict[str, Any] = {}
    if kind.time_limit_s is not None:
        limits = {"time_limit": kind.time_limit_s, "soft_time_limit": max(1, kind.time_limit_s - 30)}
    limits.update({k: v for k, v in spec.options.items() if k in ("time_limit", "soft_time_limit")})
    options = {k: v for k, v in spec.options.items() if k not in limits}
    app.task(
        name=spec.name, bind=True, shared=False, queue=spec.queue, max_retries=kind.max_retries,
        mesh_kind=kind.name, **limits, **options,
    )(run)


def _record_finish(task: Task, rt: Any, finish: dict[str, Any]) -> None:
    """Record the run's success inline (the last task's function returned). When that
    fails, send ``mesh.run.finished`` with the same data and this task's error
    callbacks, so the bookkeeping gets retries of its own and the function is not
    re-run for it; if even that send fails, the task fails (and its errbacks run)."""
    from workers.runstats import record_success

    meta, started_at = finish["meta"], float(finish["started_at"])
    try:
        record_success(rt.redis, rt.keys, meta, started_at)
    except Exception as exc:
        log.warning("recording run %s inline failed (%s); sending %s", meta.get("run_id"),
                    type(exc).__name__, FINISHED_TASK)
        task.app.signature(FINISHED_TASK, args=(meta, started_at),
                           task_id=f"{meta['run_id']}:finished", immutable=True,
                           link_error=task.request.errbacks or None).apply_async()
