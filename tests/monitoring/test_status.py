"""`mesh status`: one screen of the mesh from Redis, exit 1 when a workflow is out of
its freshness SLA. Runs the real command as a child process against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import redis

from tests.support.procs import ROOT, child_env
from tests.support.runs import finished_run
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring.celery_hooks import workers_key

PROBE = {"MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]'}


def _settings(settings: MeshSettings) -> MeshSettings:
    env = settings.to_env() | PROBE
    return MeshSettings.load(env)


def _status(settings: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "status", *args], cwd=ROOT,
                          env=child_env(settings), capture_output=True, text=True, timeout=120)


def test_status_reports_every_part_and_exits_1_when_a_workflow_is_stale(
        settings: MeshSettings, r: redis.Redis) -> None:
    # Given: probe succeeded just now, probe-coalesced 2 h ago (its SLA is 1 h);
    # a stream with unread entries, a queued task, a dead letter, a worker heartbeat
    # and a held GPU item.
    s = _settings(settings)
    keys = Keys(s.redis.key_prefix)
    stats = RunLedger(r, keys)
    now = time.time()
    finished_run(stats, "probe", ok=True, started_at=now - 1, now=now)
    finished_run(stats, "probe-coalesced", ok=True, started_at=now - 7201, now=now - 7200)
    finished_run(stats, "probe-coalesced", ok=False, started_at=now - 7300, now=now - 7300)
    r.xgroup_create(keys.stream(0), s.dispatcher.group, id="0", mkstream=True)
    for i in range(3):
        r.xadd(keys.stream(0), {"id": f"e{i}"})
    r.rpush(f"{keys.celery_prefix()}cpu", b"{}")
    r.xadd(keys.dlq, {"reason": "invalid"})
    r.hset(workers_key(keys), "w1@host", json.dumps({"queues": ["cpu", "io"], "ts": now,
                                                    "concurrency": 2}))
    r.hset(workers_key(keys), "w2@host", json.dumps({"queues": ["gpu"], "ts": now - 3600,
                                                    "concurrency": 1}))
    r.zadd(keys.gpu_held_order(), {"item-1": now})

    # When
    out = _status(s, "--json")

    # Then
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["out_of_sla"] == ["probe-coalesced"]
    wf = {w["workflow"]: w for w in data["workflows"]}
    assert wf["probe"]["within_sla"] and wf["probe"]["successes"] == 1
    assert not wf["probe-coalesced"]["within_sla"] and wf["probe-coalesced"]["failures"] == 1
    assert data["streams"][0]["lag"] == 3 and data["streams"][0]["published"] == 3
    assert data["queues"]["cpu"]["depth"] == 1
    assert data["queues"]["cpu"]["workers_alive"] == 1 and data["queues"]["io"]["processes"] == 2
    assert data["queues"]["gpu"]["workers_alive"] == 0, "a stale heartbeat is not a live worker"
    assert data["dlq"]["length"] == 1
    assert data["gpu"]["held"] == 1
    assert data["gpu"]["next_offpeak"] is not None

    # And the table form shows the same, with the same exit status.
    table = _status(s)
    assert table.returncode == 1
    assert "OUT OF SLA" in table.stdout and "probe-coalesced" in table.stdout


def test_status_exits_0_when_every_workflow_is_fresh(settings: MeshSettings, r: redis.Redis) -> None:
    s = _settings(settings)
    stats = RunLedger(r, Keys(s.redis.key_prefix))
    now = time.time()
    for wf in ("probe", "probe-coalesced"):
        finished_run(stats, wf, ok=True, started_at=now - 1, now=now)
    out = _status(s, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["out_of_sla"] == []


def test_status_exits_3_when_redis_is_unreachable(settings: MeshSettings) -> None:
    s = MeshSettings.load(settings.to_env() | {"MESH_REDIS_URL": "redis://127.0.0.1:1/0",
                                               "MESH_REDIS_SOCKET_CONNECT_TIMEOUT_S": "0.2",
                                               "MESH_REDIS_STARTUP_TIMEOUT_S": "0.5"})
    out = _status(s, "--json")
    assert out.returncode == 3  # Redis unusable (2 is bad configuration)
    assert "cannot connect to Redis" in out.stderr
