"""`mesh health` (readiness/liveness) and `mesh drain` (preStop) against a real
redis-server and a real Celery worker process named as the manifests name it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support.procs import ROOT, child_env, start, wait_for
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.cli.health_cmd import control_app


def mesh(settings: MeshSettings, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                          env=child_env(settings), capture_output=True, text=True, timeout=timeout_s)


def unreachable(settings: MeshSettings) -> MeshSettings:
    env = settings.to_env()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["MESH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    env["MESH_REDIS_SOCKET_CONNECT_TIMEOUT_S"] = "1"
    return MeshSettings.load(env)


@pytest.mark.integration
def test_ready_when_redis_answers_and_not_when_it_does_not(settings: MeshSettings) -> None:
    ok = mesh(settings, "health", "--component", "dispatcher")
    assert ok.returncode == 0, ok.stderr
    down = mesh(unreachable(settings), "health", "--component", "dispatcher")
    assert down.returncode == 1
    assert "unhealthy" in down.stderr
    assert "redis://" not in down.stderr, "the URL (it may carry a password) is never printed"


@pytest.mark.integration
def test_liveness_does_not_depend_on_redis(settings: MeshSettings) -> None:
    result = mesh(unreachable(settings), "health", "--component", "beat", "--live")
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_worker_probes_and_drain_on_a_real_worker(settings: MeshSettings, tmp_path: Path) -> None:
    # Given a worker named as the manifests name it: <prefix>@<pod name = hostname>
    node = f"cpu@{socket.gethostname()}"
    worker = start("worker", ["worker", "-Q", "cpu", "-c", "1", "--name", node], settings, tmp_path)
    try:
        # Then it becomes ready once it answers a control ping
        wait_for(lambda: mesh(settings, "health", "--component", "worker", "--node-prefix", "cpu")
                 .returncode == 0, timeout_s=90, interval_s=1, what="worker ready")
        live = mesh(settings, "health", "--component", "worker", "--node-prefix", "cpu", "--live")
        assert live.returncode == 0, live.stderr
        # And a node that does not exist is neither ready nor alive (broker up: it is hung)
        missing = mesh(settings, "health", "--component", "worker", "--node-prefix", "nope",
                       "--timeout-s", "2")
        assert missing.returncode == 1 and "does not answer" in missing.stderr
        hung = mesh(settings, "health", "--component", "worker", "--node-prefix", "nope", "--live",
                    "--timeout-s", "2")
        assert hung.returncode == 1

        # When the preStop hook drains it
        drained = mesh(settings, "drain", "--queues", "cpu", "--node-prefix", "cpu", "--poll-s", "2",
                       "--max-wait-s", "60")
        # Then it stopped consuming and reports nothing in hand, and the worker still runs
        assert drained.returncode == 0, drained.stderr
        assert f"{node} stopped consuming cpu" in drained.stdout
        assert f"{node} has no active task" in drained.stdout
        assert worker.alive()
        app = control_app(settings)
        try:
            queues = app.control.inspect(destination=[node], timeout=5).active_queues()
        finally:
            app.close()
        assert queues is not None and queues[node] == [], queues
    finally:
        worker.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_drain_stops_consuming_and_waits_for_the_task_in_hand(
        settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    env = settings.to_env() | {"MESH_CELERY_EXTRA_MODULES": '["tests.k8s.drain_probe"]'}
    s = MeshSettings.load(env)
    keys = Keys(s.redis.key_prefix)
    node = f"cpu@{socket.gethostname()}"
    worker = start("worker", ["worker", "-Q", "cpu", "-c", "2", "--name", node], s, tmp_path)
    app = create_app(s)
    try:
        # Given a worker running a long task
        app.send_task("mesh.test.k8s.hold", args=("first",), queue="cpu")
        wait_for(lambda: r.lrange(keys.ns("k8s", "started"), 0, -1) == [b"first"], timeout_s=90,
                 interval_s=0.2, what="the long task started")
        # When the preStop hook runs
        drain = subprocess.Popen(
            [sys.executable, "-m", "worker_mesh.workers.cli", "drain", "--queues", "cpu", "--node-prefix", "cpu",
             "--poll-s", "1", "--max-wait-s", "120"],
            cwd=ROOT, env=child_env(s), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # Then the worker stops taking work: a task sent now stays in the queue,
            # although the worker has a free slot
            wait_for(lambda: _consumes(s, node) == [], timeout_s=60, interval_s=0.5,
                     what="consumer cancelled")
            app.send_task("mesh.test.k8s.hold", args=("second",), queue="cpu")
            queue_key = keys.celery_prefix() + "cpu"
            wait_for(lambda: r.llen(queue_key) == 1, timeout_s=30, what="second task queued")
            # and the hook keeps waiting while the first task runs
            assert drain.poll() is None, drain.communicate()[0]
            # When the task finishes, the hook returns
            r.set(keys.ns("k8s", "release"), 1)
            out, _ = drain.communicate(timeout=90)
        finally:
            if drain.poll() is None:
                drain.kill()
        assert drain.returncode == 0, out
        assert f"{node} has no active task" in out
        assert r.lrange(keys.ns("k8s", "finished"), 0, -1) == [b"first"]
        assert r.llen(queue_key) == 1, "the drained worker took new work"
        assert r.lrange(keys.ns("k8s", "started"), 0, -1) == [b"first"]
    finally:
        r.set(keys.ns("k8s", "release"), 1)
        worker.stop()
        app.close()


def _consumes(settings: MeshSettings, node: str) -> list[str] | None:
    app = control_app(settings)
    try:
        replies = app.control.inspect(destination=[node], timeout=2).active_queues()
    finally:
        app.close()
    if not replies or node not in replies:
        return None
    return [q["name"] for q in replies[node]]
