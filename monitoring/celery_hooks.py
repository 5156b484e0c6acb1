"""Celery signal hooks: task metrics, worker heartbeats, the running-task registry,
the worker's /metrics server, and Sentry. ``install(app)`` is called by ``create_app``.

Celery's signals are process-global; every receiver here checks that the sender
belongs to the app it was installed for, so several apps in one process (tests) do
not count twice. A hook never raises into Celery.

What lives where:

* per-execution numbers (duration, outcome, retries, failures) -> prometheus-client
  (multiprocess files in a prefork worker, summed by the parent's /metrics);
* which workers are alive and on which queues -> ``<prefix>:mon:workers`` (hash node ->
  JSON heartbeat, rewritten every ``monitoring.heartbeat_s``);
* which tasks run now and since when -> ``<prefix>:mon:running`` (hash task id ->
  JSON), so ``mesh exporter`` can tell a task stuck past its time limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any

from celery import Celery, signals

from worker_mesh.mesh.errors import PermanentError, Throttled, TransientError
from worker_mesh.monitoring import metrics, multiproc, sentry

log = logging.getLogger(__name__)

_installed: dict[int, Celery] = {}
_started: dict[str, float] = {}
_state: dict[str, Any] = {}


def workers_key(keys: Any) -> str:
    return str(keys.ns("mon", "workers"))


def running_key(keys: Any) -> str:
    return str(keys.ns("mon", "running"))


def install(app: Celery) -> None:
    """Hook ``app``'s workers into metrics, heartbeats and Sentry (idempotent)."""
    _installed[id(app)] = app
    settings = getattr(app, "mesh_settings", None)
    if settings is not None and settings.monitoring.sentry_dsn is not None:
        sentry.init(settings)
    _connect()
    _serve_for_command(settings)


SERVE_AT_APP_CREATION = ("dispatcher", "beat")
"""CLI commands whose process serves /metrics as soon as its app exists (a worker
serves from its parent process once the pool is up, in ``_on_worker_ready``)."""


def _serve_for_command(settings: Any) -> None:
    import click

    ctx = click.get_current_context(silent=True)
    if (settings is None or ctx is None or ctx.info_name not in SERVE_AT_APP_CREATION
            or _state.get("server") is not None):
        return
    try:
        _state["server"] = multiproc.serve(settings.monitoring.metrics_port,
                                           settings.monitoring.metrics_address)
    except OSError as exc:
        log.error("cannot serve /metrics on port %s: %s", settings.monitoring.metrics_port, exc)


def _ours(task_or_app: Any) -> Celery | None:
    app = getattr(task_or_app, "app", task_or_app)
    return _installed.get(id(app))


def _runtime(app: Celery) -> Any:
    from worker_mesh.workers.runtime import runtime_for

    return runtime_for(app)


def _queue_of(task: Any) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or getattr(task, "queue", None) or "cpu")


def _meta(task: Any, args: Any) -> dict[str, Any]:
    """The run's metadata: from the message headers the starter puts on every task of
    a run (every step, chord members included), else from a built-in task's first
    argument (messages sent before headers existed)."""
    headers = getattr(getattr(task, "request", None), "headers", None) or {}
    if headers.get("mesh_workflow"):
        meta = {k[5:]: v for k, v in headers.items() if str(k).startswith("mesh_")}
        task_id = getattr(task.request, "id", None) or ""
        if len(task_id) > 37 and task_id[36] == ":":
            meta["run_id"], meta["step"] = task_id[:36], task_id[37:]
        return meta
    if args and isinstance(args[0], dict) and "workflow" in args[0]:
        return args[0]
    return {}


# -- worker process lifecycle -------------------------------------------------------------
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = _ours(sender)
    if app is not None:
        _state["controller"] = sender
        _state["app"] = app


def _on_process_init(**_: Any) -> None:
    app = _state.get("app") or next(iter(_installed.values()), None)
    if app is None:
        return
    try:
        rt = _runtime(app)
        metrics.bind_store(rt.redis, rt.keys)
        metrics.declare_tasks({name: getattr(t, "queue", None) or "cpu"
                               for name, t in app.tasks.items() if name.startswith("mesh.")})
    except Exception:
        log.debug("process init hook failed", exc_info=True)


def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    multiproc.mark_dead(pid or os.getpid())


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = _state.get("app")
    controller = _state.get("controller")
    if app is None or controller is None:
        return
    settings = app.mesh_settings  # type: ignore[attr-defined]
    _on_process_init()
    try:
        _state["server"] = multiproc.serve(settings.monitoring.metrics_port,
                                           settings.monitoring.metrics_address)
    except OSError as exc:
        log.error("cannot serve /metrics on port %s: %s", settings.monitoring.metrics_port, exc)
    stop = threading.Event()
    _state["stop"] = stop
    t = threading.Thread(target=_heartbeat_loop, args=(app, controller, stop),
                         name="mesh-heartbeat", daemon=True)
    t.start()


def _heartbeat(app: Celery, controller: Any) -> None:
    rt = _runtime(app)
    queues = sorted(app.amqp.queues.consume_from or [])
    beat = {"queues": queues, "ts": time.time(), "pid": os.getpid(),
            "concurrency": int(getattr(controller, "concurrency", 1) or 1),
            "pool": type(getattr(controller, "pool", None)).__name__}
    rt.redis.hset(workers_key(rt.keys), controller.hostname, json.dumps(beat))


def _heartbeat_loop(app: Celery, controller: Any, stop: threading.Event) -> None:
    interval = app.mesh_settings.monitoring.heartbeat_s  # type: ignore[attr-defined]
    while not stop.is_set():
        try:
            _heartbeat(app, controller)
        except Exception:
            log.debug("heartbeat failed", exc_info=True)
        stop.wait(interval)


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    app = _ours(sender)
    if app is None:
        return
    stop = _state.pop("stop", None)
    if stop is not None:
        stop.set()
    try:
        rt = _runtime(app)
        rt.redis.hdel(workers_key(rt.keys), sender.hostname)
    except Exception:
        log.debug("heartbeat removal failed", exc_info=True)
    server = _state.pop("server", None)
    if server is not None:
        with contextlib.suppress(Exception):
            server.shutdown()


# -- tasks ------------------------------------------------------------------------------------
def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None,
               args: Any = None, **_: Any) -> None:
    task = task or sender
    app = _ours(task)
    if app is None or task_id is None:
        return
    queue = _queue_of(task)
    _started[task_id] = time.monotonic()
    metrics.task_started(queue)
    sentry.task_scope(task.name, getattr(task, "mesh_kind", None), _meta(task, args), args or ())
    try:
        rt = _runtime(app)
        limit = task.time_limit or app.conf.task_time_limit or 0
        entry = {"task": task.name, "queue": queue, "started": time.time(), "limit_s": limit,
                 "pid": os.getpid(), "workflow": _meta(task, args).get("workflow")}
        rt.redis.hset(running_key(rt.keys), task_id, json.dumps(entry))
    except Exception:
        log.debug("running-task registry failed", exc_info=True)


def _on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
                state: str | None = None, args: Any = None, **_: Any) -> None:
    task = task or sender
    app = _ours(task)
    if app is None or task_id is None:
        return
    t0 = _started.pop(task_id, None)
    outcome = {"SUCCESS": "succeeded", "RETRY": "retried"}.get(state or "", "failed")
    metrics.task_finished(task.name, _queue_of(task),
                          None if t0 is None else time.monotonic() - t0, outcome,
                          _meta(task, args).get("workflow"))
    try:
        rt = _runtime(app)
        rt.redis.hdel(running_key(rt.keys), task_id)
    except Exception:
        log.debug("running-task registry failed", exc_info=True)


def error_kind(exc: BaseException | None) -> str:
    """The bounded ``error`` label of a final failure."""
    from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    if isinstance(exc, (TimeLimitExceeded, SoftTimeLimitExceeded)):
        return "time_limit"
    if isinstance(exc, PermanentError):
        return "permanent"
    if isinstance(exc, TransientError):
        return "transient"
    return "other"


def _on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None,
                args: Any = None, **_: Any) -> None:
    app = _ours(sender)
    if app is None:
        return
    # Workflow-level failures are counted once per run by mesh.dlq.workflow_failed.
    metrics.task_failed(sender.name, error_kind(exception))
    sentry.task_failed(getattr(sender, "mesh_kind", None))


def _on_retry(sender: Any = None, reason: Any = None, **_: Any) -> None:
    if _ours(sender) is None:
        return
    if isinstance(getattr(reason, "exc", None), Throttled):
        return  # waiting for budget, not a failure (mesh_ratelimit_throttled_total)
    metrics.task_retried(sender.name)


def _connect() -> None:
    """Connect the receivers once per process (strong refs, fixed dispatch uids)."""
    if _state.get("connected"):
        return
    _state["connected"] = True
    for sig, fn in ((signals.worker_init, _on_worker_init),
                    (signals.worker_process_init, _on_process_init),
                    (signals.worker_process_shutdown, _on_process_shutdown),
                    (signals.worker_ready, _on_worker_ready),
                    (signals.worker_shutdown, _on_worker_shutdown),
                    (signals.task_prerun, _on_prerun),
                    (signals.task_postrun, _on_postrun),
                    (signals.task_failure, _on_failure),
                    (signals.task_retry, _on_retry)):
        sig.connect(fn, weak=False, dispatch_uid=f"mesh-monitoring-{fn.__name__}")
