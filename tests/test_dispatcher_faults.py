"""Fault tests: dispatcher processes killed (SIGKILL) or stopped (SIGTERM) mid-stream.

No worker runs here: what must hold is that every event's run reached the broker (its
first task's message is on the queue) and every entry is accounted for."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from chains.registry import RUN_NAMESPACE
from events.audit import audit
from events.catalog import CustomerActivity
from events.publisher import Publisher
from mesh.embedded import EmbeddedRedis
from tests.support.procs import start, wait_for
from tests.test_dispatcher_e2e import Mesh, probe_settings

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


def test_dispatcher_needs_a_reachable_redis_and_says_why(tmp_path: Path) -> None:
    """No Redis at all: the dispatcher waits (backoff), never busy-loops or crashes, and
    still exits cleanly on SIGTERM."""
    from mesh.embedded import free_port
    from mesh.settings import MeshSettings

    s = MeshSettings.load({"MESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                           "MESH_REDIS_SOCKET_CONNECT_TIMEOUT_S": "0.2",
                           "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]'})
    d = start("dispatcher", ["dispatcher"], s, tmp_path / "logs")
    wait_for(lambda: "retrying in" in d.output(), 60, what="a retry message")
    assert d.alive()
    assert d.stop() == 0
    assert "cannot connect to Redis" in d.output()
