"""Fault tests: dispatcher processes killed (SIGKILL) or stopped (SIGTERM) mid-stream.

No worker runs here: what must hold is that every event's run reached the broker (its
first task's message is on the queue) and every entry is accounted for."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from tests.support.procs import start, wait_for
from tests.test_dispatcher_e2e import Mesh, probe_settings
from worker_mesh.chains.registry import RUN_NAMESPACE
from worker_mesh.events.audit import audit
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import EmbeddedRedis

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.fault]

N = 3000


def _accounted(mesh: Mesh) -> int:
    return sum(a.accounted for a in audit(mesh.r, mesh.settings))


def _queued_task_ids(mesh: Mesh) -> set[str]:
    queue = mesh.keys.celery_prefix() + "cpu"
    return {json.loads(m)["headers"]["id"] for m in mesh.r.lrange(queue, 0, -1)}


def test_sigkilled_dispatcher_loses_nothing(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    s = probe_settings(redis_server, tmp_path, MESH_DISPATCHER_BATCH_COUNT="25",
                       MESH_STREAMS_PARTITIONS="2")
    mesh = Mesh(s)
    ids = mesh.pub.publish_many(
        [CustomerActivity(customer_id=f"k{i}", logins_30d=i % 50, active_days_30d=i % 30)
         for i in range(N)])
    first = start("dispatcher", ["dispatcher", "--consumer", "first"], s, tmp_path / "logs")
    try:
        wait_for(lambda: _accounted(mesh) >= 200, 60, interval_s=0.005, what="some progress")
    finally:
        first.stop(signal.SIGKILL)
    at_kill = _accounted(mesh)
    assert at_kill < N, "the dispatcher finished before it was killed: nothing was tested"
    second = start("dispatcher", ["dispatcher", "--consumer", "second"], s, tmp_path / "logs")
    try:
        res = mesh.cli("audit", "--json", "--wait-s", "90", "--streams-only")  # no workers here
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        assert second.stop() == 0, second.output()[-3000:]
    rows = audit(mesh.r, s)
    assert sum(a.published for a in rows) == N
    assert all(a.settled for a in rows)
    assert sum(a.outcomes.get("started", 0) for a in rows) == N
    expected = {f"{uuid.uuid5(RUN_NAMESPACE, f'probe:{eid}')}:record" for eid in ids}
    missing = expected - _queued_task_ids(mesh)
    assert not missing, f"{len(missing)} runs never reached the broker"


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(redis_server: EmbeddedRedis,
                                                          tmp_path: Path) -> None:
    s = probe_settings(redis_server, tmp_path, MESH_DISPATCHER_BATCH_COUNT="50")
    mesh = Mesh(s)
    Publisher(mesh.r, s.streams, mesh.keys).publish_many(
        [CustomerActivity(customer_id=f"t{i}", logins_30d=1, active_days_30d=1) for i in range(N)])
    d = start("dispatcher", ["dispatcher"], s, tmp_path / "logs")
    wait_for(lambda: _accounted(mesh) >= 100, 60, interval_s=0.005, what="some progress")
    d.signal(signal.SIGTERM)
    d.popen.wait(30)
    assert d.popen.returncode == 0, d.output()[-3000:]
    [row] = audit(mesh.r, s)
    assert row.pending == 0, "the batch in hand was not acknowledged"
    assert row.consistent
    assert "stopped after" in d.output()


def test_dispatcher_without_redis_at_start_exits_3_and_says_why(tmp_path: Path) -> None:
    """No Redis at start: after ``redis.startup_timeout_s`` the dispatcher exits 3 with
    one line saying why (issue 18: fail fast; Kubernetes restarts it with backoff)."""
    from worker_mesh.mesh.embedded import free_port
    from worker_mesh.mesh.settings import MeshSettings

    s = MeshSettings.load({"MESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                           "MESH_REDIS_SOCKET_CONNECT_TIMEOUT_S": "0.2",
                           "MESH_REDIS_STARTUP_TIMEOUT_S": "1",
                           "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]'})
    d = start("dispatcher", ["dispatcher"], s, tmp_path / "logs")
    assert d.popen.wait(30) == 3
    assert [line for line in d.output().splitlines() if line.strip()] == [
        line for line in d.output().splitlines() if "cannot connect to Redis" in line]


def test_dispatcher_waits_out_an_outage_after_start_logging_each_change_once(
        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """Redis goes away after start: the dispatcher retries with backoff, never exits,
    and logs the outage once (plus a line if the reason changes) and its end once."""
    import time

    s = probe_settings(redis_server, tmp_path)
    d = start("dispatcher", ["dispatcher"], s, tmp_path / "logs")
    try:
        wait_for(lambda: "partition(s)" in d.output(), 60, what="the dispatcher running")
        redis_server.stop()
        time.sleep(3)  # ~6 retries at 0.1, 0.2, 0.4... s
        redis_server.start()
        wait_for(lambda: "available again" in d.output(), 60, what="the recovery line")
        assert d.alive()
    finally:
        redis_server.start()
        assert d.stop() == 0
    out = d.output()
    assert 1 <= sum("unavailable" in line for line in out.splitlines()) <= 3, out[-3000:]
    assert out.count("available again after") == 1
