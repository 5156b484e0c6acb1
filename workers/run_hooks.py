"""Celery signal hooks that feed the run history and the traces (``install(app)``,
called by ``create_app``); the task wrapper itself (``workers.kinds``) is unchanged.

* before a step: the step is made current for the result stores (``mesh.lineage``);
  with tracing on, a span ``step <step>`` starts under the run's span (its
  traceparent is on the run's ledger record);
* a retry: the error that caused it is kept as the step's last error
  (``RunLedger.step_error``), so ``mesh runs show`` says why a step took 3 attempts;
* after the step: the span ends with the task's state (and the error, if any).

Hooks never raise into Celery: a failure to record is logged and the task goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from worker_mesh.mesh import lineage, tracing
from worker_mesh.mesh.runs import split_task_id

log = logging.getLogger("mesh.run_hooks")

_apps: dict[int, Celery] = {}
_open: dict[str, tuple[Any, Any]] = {}
"""task id -> (lineage token, span) of the steps running in this process."""
_errors: dict[str, str] = {}


def install(app: Celery) -> None:
    _apps[id(app)] = app
    settings = getattr(app, "mesh_settings", None)
    if settings is not None:
        tracing.configure(settings.tracing, "worker")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="mesh-run-prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="mesh-run-postrun")
    signals.task_retry.connect(_retry, weak=False, dispatch_uid="mesh-run-retry")
    signals.task_failure.connect(_failure, weak=False, dispatch_uid="mesh-run-failure")


def _app(task: Any) -> Celery | None:
    return _apps.get(id(getattr(task, "app", None)))


def error_text(exc: Any) -> str:
    inner = getattr(exc, "exc", None)  # celery.exceptions.Retry carries the cause
    exc = inner if isinstance(inner, BaseException) else exc
    return f"{type(exc).__name__}: {exc}"[:1000] if isinstance(exc, BaseException) else str(exc)[:1000]


def _prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    ids = split_task_id(task_id)
    app = _app(task or sender)
    if ids is None or app is None or task_id is None:
        return
    token = lineage.enter(*ids)
    span = None
    if tracing.enabled():
        try:
            from worker_mesh.workers.runtime import runtime_for

            parent = runtime_for(app).ledger.get_field(ids[0], "trace")
            span = tracing.start(f"step {ids[1]}", parent,
                                 {"mesh.run_id": ids[0], "mesh.step": ids[1],
                                  "mesh.task": getattr(task, "name", ""),
                                  "mesh.attempt": getattr(getattr(task, "request", None), "retries", 0)})
        except Exception as exc:
            log.warning("cannot start the span of step %s (%s)", ids[1], type(exc).__name__)
    _open[task_id] = (token, span)


def _postrun(sender: Any = None, task_id: str | None = None, state: str | None = None,
             **_: Any) -> None:
    if task_id is None:
        return
    opened = _open.pop(task_id, None)
    error = _errors.pop(task_id, None)
    if opened is None:
        return
    token, span = opened
    lineage.leave(token)
    try:
        tracing.end(span, error=error if state == "FAILURE" else None, attrs={"mesh.state": state})
    except Exception as exc:
        log.warning("cannot end the span of task %s (%s)", task_id, type(exc).__name__)


def _retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    ids = split_task_id(getattr(request, "id", None))
    app = _app(sender)
    if ids is None or app is None:
        return
    try:
        from worker_mesh.workers.runtime import runtime_for

        runtime_for(app).ledger.step_error(ids[0], ids[1], error_text(reason))
    except Exception as exc:
        log.warning("cannot record the retry error of step %s (%s)", ids[1], type(exc).__name__)


def _failure(sender: Any = None, task_id: str | None = None, exception: Any = None,
             **_: Any) -> None:
    if task_id is not None and task_id in _open:
        _errors[task_id] = error_text(exception)
