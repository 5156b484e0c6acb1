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

Every task of a run is also a step of the run ledger (``mesh.runs``): before the
function runs, the wrapper asks the ledger whether this step already succeeded in this
run (a re-driven or resumed run) and then returns the memoized result instead of
running it again; after the function returned, it memoizes the result and moves the
run on (the run's last step ends it as succeeded). A task declared with
``memo=False`` is re-run on re-drive (its result is not kept); ``ledger=False`` keeps
a task out of the ledger altogether (failure callbacks). The ledger being unreachable
never fails a step: the function still runs (at least once), and the run is re-driven
later if its progress was not recorded.

Tasks are declared without an app (``@task(...)`` records a ``TaskSpec``) and bound to
an app by ``register_tasks(app)``, so the same module serves any number of apps.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore

from worker_mesh.gpu_pool.routing import Resource, declare_task, queue_for
from worker_mesh.mesh.errors import PermanentError, Throttled, TransientError
from worker_mesh.mesh.flow.declare import Flow
from worker_mesh.mesh.runs import STARTED, Begin, split_task_id
from worker_mesh.workers.context import StepContext, enter, from_headers, leave
from worker_mesh.workers.flowctl import flow_control, reschedule

if TYPE_CHECKING:
    from celery import Celery, Task

log = logging.getLogger("mesh.kinds")

FINISH_KWARG = "_mesh_finish"
"""Reserved keyword argument of an earlier starter (popped and ignored: the ledger
now knows a run's last step)."""



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
    memo: bool = True
    """Memoize the result: a re-driven or resumed run does not run the step again."""
    ledger: bool = True
    """A step of its run (False: bookkeeping such as failure callbacks)."""
    runtime: bool = True
    """Call ``fn(rt, *args)`` (built-in tasks); False: ``fn(*args)``, the runtime and the
    run being available through ``workers.steps.current_step()`` (a team's steps)."""
    flow: Flow = field(default_factory=Flow)
    """Rate limits, concurrency keys, tenant and priority (``mesh.flow``): checked before
    the function runs; a step without budget is rescheduled, not failed, not retried."""

    @property
    def queue(self) -> str:
        return queue_for(self.resource)


SPECS: dict[str, TaskSpec] = {}

AFTER_SUCCESS: list[Callable[[Task, Any, Any], None]] = []
"""Called with (task, runtime, result) after a step ran and its success is recorded
(not for a memoized return): ``workers.fusion`` registers itself here."""


def task(name: str, *, kind: TaskKind = STANDARD, resource: Resource = Resource.CPU,
         memo: bool = True, ledger: bool = True, runtime: bool = True, flow: Flow | None = None,
         **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare ``fn(rt, *args, **kwargs)`` as task ``name``. ``rt`` is the process's
    ``Runtime`` (clients, stores, models), injected by the wrapper; tests call ``fn``
    directly with a runtime of their own."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in SPECS and SPECS[name].fn is not fn:
            raise ValueError(f"task {name!r} is declared twice")
        SPECS[name] = TaskSpec(name, fn, kind, resource, options, memo, ledger, runtime,
                               flow or Flow())
        declare_task(name, resource)
        return fn

    return deco


def register_tasks(app: Celery, specs: dict[str, TaskSpec] | None = None) -> None:
    """Bind every declared task to ``app``, with its queue and retry policy."""
    from worker_mesh.workers.runtime import runtime_for

    for spec in (specs or SPECS).values():
        _bind(app, spec, runtime_for)


def _bind(app: Celery, spec: TaskSpec, runtime_for: Callable[[Celery], Any]) -> None:
    kind = spec.kind

    def run(self: Task, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop(FINISH_KWARG, None)
        rt = runtime_for(self.app)
        step = split_task_id(self.request.id) if spec.ledger else None
        if step is not None:
            known, memo = _begin(rt, step, kind.name)
            if known is not None and known != STARTED:
                if memo is not None and memo.memoized:
                    return memo.result
                raise Ignore()  # the run ended (cancelled, failed): later steps do not start
            if memo is not None and memo.memoized and spec.memo:
                _done(rt, step, memo.result, spec.memo)
                return memo.result
        token = _enter(self, rt, step)
        admission = None
        try:
            if spec.flow:
                admission = _admit(self, rt, spec, args, kwargs)
            result = spec.fn(rt, *args, **kwargs) if spec.runtime else spec.fn(*args, **kwargs)
        except Throttled as exc:  # waiting for budget: rescheduled, not a retry, not a failure
            reschedule(self, exc)
            raise  # not reached: reschedule raises Celery's Retry
        except PermanentError:
            raise
        except TransientError as exc:
            if self.request.retries >= kind.max_retries:
                raise
            countdown = kind.delay_s(self.request.retries, exc.delay_s)
            _retrying(rt, step, countdown)
            raise self.retry(exc=exc, countdown=countdown, max_retries=kind.max_retries) from None
        except Exception as exc:
            if not kind.retry_unexpected or self.request.retries >= kind.max_retries:
                raise
            countdown = kind.delay_s(self.request.retries)
            _retrying(rt, step, countdown)
            raise self.retry(exc=exc, countdown=countdown, max_retries=kind.max_retries) from None
        finally:
            if admission is not None:
                admission.close()  # concurrency slots go back on every outcome
            _leave(token)
        if step is not None:
            _done(rt, step, result, spec.memo)
        for hook in AFTER_SUCCESS:  # e.g. workers.fusion: run the chain's next step here
            hook(self, rt, result)
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


def _enter(task: Task, rt: Any, step: tuple[str, str] | None) -> Any:
    """Make the run visible to the function (``workers.steps.current_step()``)."""
    meta = from_headers(task.request)
    run_id, name = step if step is not None else ("", task.name)
    return enter(StepContext(run_id, name, meta.get("workflow", ""),
                             meta.get("workflow_version", ""), meta.get("event_type", ""),
                             meta.get("event_id", ""), int(task.request.retries or 0), rt))


def _leave(token: Any) -> None:
    leave(token)


def _admit(task: Task, rt: Any, spec: TaskSpec, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Any:
    """The step's flow-control admission (leases, rate permits) or ``Throttled``."""
    call = (rt, *args) if spec.runtime else args
    try:
        named = dict(inspect.signature(spec.fn).bind_partial(*call, **kwargs).arguments)
    except TypeError:
        named = {}
    return flow_control(rt).enter(spec.flow, named, step_id=str(task.request.id))


def _begin(rt: Any, step: tuple[str, str], kind: str) -> tuple[str | None, Begin | None]:
    """The run's state and the step's memo; (None, None) when the ledger cannot be read
    (the step then runs: at least once beats not at all)."""
    try:
        b = rt.ledger.begin(step[0], step[1], kind)
    except Exception as exc:
        log.warning("run ledger unreadable before step %s of run %s (%s): running it",
                    step[1], step[0], type(exc).__name__)
        return None, None
    return b.state, b


def _done(rt: Any, step: tuple[str, str], result: Any, memo: bool) -> None:
    """Record the step's success. A failure here never fails the step (its effect is
    applied): the run is re-driven from this step later, which runs it again."""
    try:
        rt.ledger.step_done(step[0], step[1], result, memo=memo)
    except Exception as exc:
        log.warning("recording step %s of run %s failed (%s); the re-driver will resume it",
                    step[1], step[0], type(exc).__name__)


def _retrying(rt: Any, step: tuple[str, str] | None, countdown: float) -> None:
    if step is None:
        return
    try:
        rt.ledger.step_retry(step[0], step[1], countdown)
    except Exception as exc:
        log.warning("recording a retry of step %s of run %s failed (%s)", step[1], step[0],
                    type(exc).__name__)
