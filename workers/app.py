"""The Celery app, configured from the settings tree.

Guarantees set here (tests check each): JSON only (every other serializer is refused, in and out),
``acks_late`` + ``reject_on_worker_lost`` (a task is acknowledged after it ran, and one
whose worker died is redelivered), bounded prefetch, a visibility timeout above the
longest task's hard time limit, task events on (Flower), Redis result backend whose
chords count parts (no ``chord_unlock`` polling), every key under the mesh's prefix.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from worker_mesh.gpu_pool.routing import ALL_QUEUES
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import celery_ssl_options, patch_kombu_half_closed_channel, redis_url
from worker_mesh.mesh.settings import MeshSettings


def celery_config(settings: MeshSettings) -> dict[str, Any]:
    url = redis_url(settings.redis)
    keys = Keys(settings.redis.key_prefix)
    c = settings.celery
    transport: dict[str, Any] = {
        "visibility_timeout": c.visibility_timeout_s,
        "global_keyprefix": keys.celery_prefix(),
        "socket_timeout": settings.redis.socket_timeout_s,
        "socket_connect_timeout": settings.redis.socket_connect_timeout_s,
        "health_check_interval": settings.redis.health_check_interval_s,
        "retry_on_timeout": True,
        # Scan for unacked messages past the visibility timeout (a lost worker's tasks)
        # every 10 s, not kombu's default of every 10th sweep (100 s).
        "unacked_restore_throttle": 1,
    }
    cfg: dict[str, Any] = {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {
            "global_keyprefix": keys.celery_prefix(),
            "retry_policy": {"timeout": settings.redis.retry_max_backoff_s * 4},
        },
        "redis_socket_timeout": settings.redis.socket_timeout_s,
        "redis_socket_connect_timeout": settings.redis.socket_connect_timeout_s,
        "redis_retry_on_timeout": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # JSON only, everywhere.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Delivery guarantees.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": c.prefetch_multiplier,
        "task_time_limit": c.task_time_limit_s,
        "task_soft_time_limit": c.task_soft_time_limit_s,
        "result_expires": c.result_expires_s,
        "result_extended": True,
        "worker_concurrency": c.worker_concurrency,
        "worker_max_tasks_per_child": c.worker_max_tasks_per_child,
        "worker_max_memory_per_child": c.worker_max_memory_per_child_bytes // 1024,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Visibility: Flower and the metrics see every task.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # Queues.
        "task_queues": [Queue(q, routing_key=q) for q in ALL_QUEUES],
        "task_default_queue": "cpu",
        "task_create_missing_queues": False,
        "task_always_eager": c.task_always_eager,
        "task_eager_propagates": True,
        "worker_hijack_root_logger": False,
        "broker_channel_error_retry": True,
        # Beat keeps its schedule in memory (no shelve file); crontab entries are
        # recomputed at start, and a missed run is caught by the freshness alerts.
        "beat_scheduler": "celery.beat:Scheduler",
    }
    ssl_options = celery_ssl_options(settings.redis)
    if ssl_options is not None:  # rediss://: verify the server against tls_ca_file
        cfg["broker_use_ssl"] = ssl_options
        cfg["redis_backend_use_ssl"] = dict(ssl_options)
    return cfg


def create_app(settings: MeshSettings) -> Celery:
    """A new Celery app for these settings, with every declared task bound to it
    (``workers/tasks/*`` and ``celery.extra_modules``). No global ``current_app``."""
    from worker_mesh.chains.loader import import_extra_modules
    from worker_mesh.workers.fusion import install as install_fusion
    from worker_mesh.workers.kinds import register_tasks
    from worker_mesh.workers.tasks import import_all

    import_all()
    import_extra_modules(settings)
    patch_kombu_half_closed_channel()  # a Redis restart must not kill the worker
    leave_unknown_tasks_to_the_redriver()
    app = Celery("mesh", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.mesh_settings = settings  # type: ignore[attr-defined]
    register_tasks(app)
    install_fusion()  # chain steps on the same queue run in one task (throughput.fuse_chains)
    from worker_mesh.monitoring import celery_hooks
    from worker_mesh.workers import run_hooks

    celery_hooks.install(app)  # metrics, heartbeats, Sentry: observers through Celery's signals
    run_hooks.install(app)  # run history, lineage, traces
    return app


def leave_unknown_tasks_to_the_redriver() -> None:
    """A worker that receives a task it does not know (deployed without the module that
    defines it) drops the message without logging its body, and notes on the run which
    task was unknown where; the run ledger's re-driver re-sends the run after its
    deadline (a worker that has the task may be up by then) and, after
    ``runs.redrive_max`` re-drives, dead-letters it with a reason naming the task.

    Celery's own handler logs the whole message body (event payloads) and stores a
    ``NotRegistered`` failure under the step's deterministic task id."""
    import logging

    from celery.worker.consumer import consumer as cmod

    from worker_mesh.mesh.runs import split_task_id

    if getattr(cmod.Consumer.on_unknown_task, "_mesh", False):
        return
    log = logging.getLogger("mesh.worker")

    def on_unknown_task(self: Any, body: Any, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None) or {}
        task_id, name = str(headers.get("id", "?")), str(headers.get("task", "?"))
        ids = split_task_id(task_id)
        log.error("task %s is not registered on this worker (run %s, step %s): message "
                  "dropped, left for the run ledger's re-driver", name,
                  ids[0] if ids else "-", ids[1] if ids else "-")
        message.reject_log_error(log, self.connection_errors)
        if ids is None:
            return
        try:
            from worker_mesh.workers.runtime import runtime_for

            runtime_for(self.app).ledger.note(
                ids[0], unregistered=f"task {name} not registered on worker {self.hostname}")
        except Exception as err:
            log.warning("could not note the unknown task on run %s (%s)", ids[0],
                        type(err).__name__)

    on_unknown_task._mesh = True  # type: ignore[attr-defined]
    cmod.Consumer.on_unknown_task = on_unknown_task  # type: ignore[method-assign]
