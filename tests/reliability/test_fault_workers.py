"""Worker faults with real worker processes.

- SIGKILL a whole worker (main process and pool: a lost node) in the middle of a long
  task: the message stays in the broker's ``unacked`` set (``acks_late``) and another
  worker runs it once the visibility timeout has passed; the run completes and its
  state does not stay ``STARTED``.
- SIGKILL only the pool process running the task (the OOM killer's usual victim): the
  main process sees the worker lost and requeues at once (``reject_on_worker_lost``).
- SIGTERM a worker with tasks in flight: warm shutdown finishes them, then it exits 0.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import psutil
import pytest

from tests.support.procs import start, wait_for
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def _settings(base: MeshSettings, **extra: str) -> MeshSettings:
    return MeshSettings.load({**base.to_env(),
                              "MESH_CELERY_EXTRA_MODULES": '["tests.reliability.effects"]',
                              **extra})


def _send(app, event_id: str, sleep_s: float):  # type: ignore[no-untyped-def]
    meta = {"run_id": f"run-{event_id}", "workflow": "rel-effect", "workflow_version": "1"}
    return app.signature("mesh.rel.effect", args=(meta, {"event_id": event_id, "key": "k",
                                                          "sleep_s": sleep_s}),
                         task_id=f"{meta['run_id']}:effect").apply_async()


def test_sigkilled_worker_task_runs_again_elsewhere(settings: MeshSettings, tmp_path: Path) -> None:
    """The replacement worker (what Kubernetes starts for a lost pod) restores the
    unacked message once it is older than the visibility timeout. (kombu checks every
    10 s at first, then every 100 s: an already running worker may take that long.)"""
    s = _settings(settings, MESH_CELERY_TASK_TIME_LIMIT_S="8", MESH_CELERY_TASK_SOFT_TIME_LIMIT_S="7",
                  MESH_CELERY_VISIBILITY_TIMEOUT_S="10")
    keys, r, app = Keys(s.redis.key_prefix), make_client(s.redis), create_app(s)
    workers = [start("worker-0", ["worker", "-Q", "io", "-c", "1", "-n", "w0@%h"], s, tmp_path / "logs")]
    try:
        res = _send(app, "long-1", 3.0)
        wait_for(lambda: r.hexists(keys.ns("rel", "started"), "long-1"), 60, what="task started")
        assert app.AsyncResult(res.id).state == "STARTED"
        workers[0].stop(signal.SIGKILL)  # the whole process group: node lost mid-task
        assert r.hlen(keys.celery_prefix() + "unacked") == 1  # acks_late: not lost
        workers.append(start("worker-1", ["worker", "-Q", "io", "-c", "1", "-n", "w1@%h"], s,
                             tmp_path / "logs"))
        # Then the new worker runs it and the run completes; nothing stays STARTED.
        assert res.get(timeout=120) == "run-long-1"
        assert res.id in workers[1].output()
        assert r.hget(keys.ns("rel", "effects"), "long-1") == b"run-long-1"
        assert app.AsyncResult(res.id).state == "SUCCESS"
        wait_for(lambda: r.hlen(keys.celery_prefix() + "unacked") == 0, 30, what="the ack")
    finally:
        for w in workers:
            w.stop()


def test_sigkilled_pool_process_task_is_requeued_at_once(settings: MeshSettings,
                                                          tmp_path: Path) -> None:
    s = _settings(settings)  # default visibility timeout (1 h): the requeue must not wait for it
    keys, r, app = Keys(s.redis.key_prefix), make_client(s.redis), create_app(s)
    w = start("worker", ["worker", "-Q", "io", "-c", "1"], s, tmp_path / "logs")
    try:
        res = _send(app, "long-2", 2.0)
        wait_for(lambda: r.hexists(keys.ns("rel", "started"), "long-2"), 60, what="task started")
        children = psutil.Process(w.popen.pid).children(recursive=True)
        assert children, "prefork worker without a pool process"
        for c in children:
            c.kill()
        assert res.get(timeout=90) == "run-long-2"
        assert int(r.get(keys.ns("rel", "executions"))) == 1
        assert "WorkerLostError" in w.output() or "exited with 'signal 9" in w.output()
        assert w.alive()
    finally:
        w.stop()


def test_sigterm_lets_in_flight_tasks_finish(settings: MeshSettings, tmp_path: Path) -> None:
    s = _settings(settings)
    keys, r, app = Keys(s.redis.key_prefix), make_client(s.redis), create_app(s)
    w = start("worker", ["worker", "-Q", "io", "-c", "2"], s, tmp_path / "logs")
    try:
        ids = [f"drain-{uuid.uuid4().hex[:6]}" for _ in range(2)]
        results = [_send(app, i, 2.0) for i in ids]
        wait_for(lambda: r.hlen(keys.ns("rel", "started")) == 2, 60, what="both tasks started")
        assert r.hlen(keys.ns("rel", "effects")) == 0
        w.signal(signal.SIGTERM)  # as Kubernetes does: the main process only
        w.popen.wait(60)
        assert w.popen.returncode == 0, w.output()[-3000:]
        # Both finished before the worker exited.
        assert {k.decode() for k in r.hkeys(keys.ns("rel", "effects"))} == set(ids)
        assert [res.get(timeout=10) for res in results] == [f"run-{i}" for i in ids]
        wait_for(lambda: r.hlen(keys.celery_prefix() + "unacked") == 0, 30, what="the acks")
    finally:
        w.stop()


