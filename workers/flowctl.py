"""Flow control in the worker: the process's ``FlowControl`` (with metrics), and how a
Celery task waits for budget without holding a worker slot.

A step that is told to wait raises ``Throttled(delay_s)``. ``reschedule`` sends the
same message again (same task id, same retry count, same chain and callbacks) with
``countdown = delay_s`` and ends this execution as RETRY: the worker slot is free at
once, and waiting never uses up the step's failure retries. ``FlowTask`` is the Celery
base class whose ``retry`` does that for ``Throttled`` (so a task wrapper that calls
``self.retry(exc=...)`` for every transient error needs no change); any other error
retries as before.

The delay is capped at ``flow.max_wait_step_s`` and half the broker's visibility
timeout: the Redis transport holds a delayed message unacknowledged in the worker, and
one held past the visibility timeout would be delivered twice.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Retry

from worker_mesh.mesh.errors import Throttled
from worker_mesh.mesh.flow import FlowControl, Priority
from worker_mesh.monitoring import metrics

log = logging.getLogger(__name__)

SERVICE = "flow.control"


class MetricsObserver:
    """``mesh.flow.Observer`` feeding the ``mesh_ratelimit_*`` metrics."""

    def admitted(self, kind: str, name: str, priority: Priority, waited_s: float) -> None:
        metrics.flow_admitted(kind, name, priority.name.lower(), waited_s)

    def throttled(self, kind: str, name: str, priority: Priority, delay_s: float) -> None:
        metrics.flow_throttled(kind, name, priority.name.lower())

    def paused(self, resource: str, delay_s: float) -> None:
        metrics.flow_paused(resource)

    def tokens(self, resource: str, estimated: int, actual: int) -> None:
        metrics.flow_tokens(resource, estimated, actual)


def flow_control(rt: Any) -> FlowControl:
    """The worker process's ``FlowControl`` (built once, on the runtime's Redis)."""
    return rt.service(SERVICE, lambda r: FlowControl(  # type: ignore[no-any-return]
        r.redis, r.keys, r.settings.flow, MetricsObserver()))


def max_delay_s(settings: Any) -> float:
    return float(min(settings.flow.max_wait_step_s, settings.celery.visibility_timeout_s / 2))


def reschedule(task: Task, exc: Throttled, *, throw: bool = True) -> Retry:
    """Send ``task``'s message again in ``exc.delay_s`` without counting a retry, and
    end this execution (raises Celery's ``Retry`` unless ``throw`` is False)."""
    request = task.request
    delay = max(min(float(exc.delay_s or 0.0), max_delay_s(task.app.mesh_settings)), 0.0)  # type: ignore[attr-defined]
    sig = task.signature_from_request(request, countdown=delay, retries=request.retries)
    sig.apply_async()
    log.debug("step %s waits %.2f s for %s", request.id, delay, exc.what or "budget")
    ret = Retry(exc=exc, when=delay, sig=sig)
    if throw:
        raise ret
    return ret


class FlowTask(Task):  # type: ignore[misc]
    """Celery task base: ``retry(exc=Throttled(...))`` reschedules (no retry counted,
    exactly the limiter's delay); everything else retries as Celery does."""

    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: Any = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Any:
        request = self.request
        if isinstance(exc, Throttled) and not request.called_directly and not request.is_eager:
            return reschedule(self, exc, throw=throw)
        return super().retry(args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta,
                             countdown=countdown, max_retries=max_retries, **options)
