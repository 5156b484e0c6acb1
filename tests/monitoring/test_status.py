"""`mesh status`: one screen of the mesh from Redis that says what is wrong and what to
do; exit 1 on any problem, 0 when healthy, 2 when Redis cannot be read. Runs the real
command as a child process against a real Redis (and a real `mesh dispatcher` for the
heartbeats)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support.procs import ROOT, child_env, start, wait_for
from tests.support.runs import finished_run
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import heartbeats, verdicts
from worker_mesh.monitoring.celery_hooks import workers_key
from worker_mesh.monitoring.snapshot import Snapshot, StuckRun

PROBE = {"MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]',
         "MESH_GPU_OFFPEAK_WINDOWS": '["00:00-24:00 UTC"]'}  # open all day: never closing


def _settings(settings: MeshSettings, **env: str) -> MeshSettings:
    return MeshSettings.load(settings.to_env() | PROBE | env)


def _status(settings: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "status", *args], cwd=ROOT,
                          env=child_env(settings), capture_output=True, text=True, timeout=120)


def _healthy(r: redis.Redis, s: MeshSettings) -> Keys:
    """A dispatcher and a worker per queue alive, both workflows fresh."""
    keys = Keys(s.redis.key_prefix)
    now = time.time()
    heartbeats.beat(r, keys, "d1", now)
    r.hset(workers_key(keys), "w1@host", json.dumps({
        "queues": ["cpu", "io", "gpu", "gpu-batch"], "ts": now, "concurrency": 2}))
    stats = RunLedger(r, keys)
    for wf in ("probe", "probe-coalesced"):
        finished_run(stats, wf, ok=True, started_at=now - 1, now=now)
    return keys


def test_status_exits_0_and_says_ok_when_nothing_is_wrong(settings: MeshSettings,
                                                          r: redis.Redis) -> None:
    s = _settings(settings)
    _healthy(r, s)
    out = _status(s, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] is True and data["verdicts"] == []
    table = _status(s)
    assert table.returncode == 0 and "OK: no problem found" in table.stdout


def _no_worker_with_work(r: redis.Redis, k: Keys) -> None:
    r.hset(workers_key(k), "w1@host", json.dumps({"queues": ["cpu", "io"], "ts": time.time()}))
    r.rpush(f"{k.celery_prefix()}gpu", b"{}", b"{}")


def _dead_letter(r: redis.Redis, k: Keys) -> None:
    r.xadd(k.dlq, {"reason_code": "invalid", "type": "customer.updated"})


def _stale(r: redis.Redis, k: Keys) -> None:
    r.hset(k.runs_last_success(), "probe-coalesced", f"{time.time() - 7200:.3f}")


def _failing(r: redis.Redis, k: Keys) -> None:
    stats = RunLedger(r, k)
    for _ in range(3):
        finished_run(stats, "probe", ok=False, started_at=time.time(), now=time.time())


def _gpu_at_risk(r: redis.Redis, k: Keys) -> None:
    r.hset(workers_key(k), "w1@host", json.dumps({"queues": ["cpu", "io"], "ts": time.time()}))
    r.zadd(k.gpu_held_order(), {"item-1": time.time()})


CASES: dict[str, tuple[Callable[[redis.Redis, Keys], None], str, str]] = {
    # problem: (inject, subject, words of the hint)
    "no_dispatcher": (lambda r, k: r.delete(heartbeats.dispatchers_key(k)), "dispatcher",
                      "start `mesh dispatcher`"),
    "unserved_queue": (_no_worker_with_work, "gpu", "KEDA"),
    "dead_letters_growing": (_dead_letter, "invalid/customer.updated", "mesh dlq replay"),
    "stale_workflow": (_stale, "probe-coalesced", "trigger events"),
    "failing_workflow": (_failing, "probe", "mesh dlq list"),
    "gpu_backlog_at_risk": (_gpu_at_risk, "gpu-batch", "GPU pool scaled up"),
}


@pytest.mark.parametrize("problem", sorted(CASES))
def test_each_problem_is_a_verdict_with_a_hint_and_exit_1(problem: str, settings: MeshSettings,
                                                         r: redis.Redis) -> None:
    # Given: a healthy mesh (seen so by a first status), then exactly one problem
    s = _settings(settings)
    keys = _healthy(r, s)
    assert _status(s, "--json").returncode == 0
    inject, subject, hint = CASES[problem]
    inject(r, keys)

    # When
    out = _status(s, "--json")

    # Then: that one verdict, with its hint, and exit status 1
    assert out.returncode == 1, out.stdout + out.stderr
    found = json.loads(out.stdout)["verdicts"]
    assert [(v["problem"], v["subject"]) for v in found] == [(problem, subject)]
    assert hint in found[0]["hint"]
    table = _status(s)
    assert table.returncode == 1
    assert f"PROBLEM {problem} ({subject})" in table.stdout and "do: " in table.stdout


def test_stuck_runs_from_the_run_ledger_are_a_verdict() -> None:
    # The ledger's read is a hook (snapshot.stuck_runs) until the ledger lands: judged here.
    snap = Snapshot(taken_at=time.time(), dispatchers=1, queues={"cpu": 0, "io": 0},
                    workers={"cpu": 1, "io": 1},
                    stuck=[StuckRun("r1", "churn", 30.0), StuckRun("r2", "churn", 5.0)])
    found = verdicts.judge(snap)
    assert [(v.problem, v.subject) for v in found] == [("stuck_runs", "churn")]
    assert "r1, r2" in found[0].message
    assert set(verdicts.PROBLEMS) == set(CASES) | {"stuck_runs"}, "every problem is tested"


def test_a_killed_dispatcher_stops_counting(settings: MeshSettings, r: redis.Redis,
                                            tmp_path: Path) -> None:
    # Given: two real dispatchers beating every 0.2 s, dead after 2 s of silence
    s = _settings(settings, MESH_MONITORING_HEARTBEAT_S="0.2",
                  MESH_MONITORING_WORKER_DEAD_AFTER_S="2")
    _healthy(r, s)
    r.delete(heartbeats.dispatchers_key(Keys(s.redis.key_prefix)))
    log_dir = tmp_path / "logs"
    a = start("dispatcher-a", ["dispatcher", "--consumer", "a"], s, log_dir)
    b = start("dispatcher-b", ["dispatcher", "--consumer", "b"], s, log_dir)
    try:
        def alive() -> dict[str, int]:
            return json.loads(_status(s, "--json").stdout)["dispatchers"]

        wait_for(lambda: alive() == {"alive": 2, "known": 2}, timeout_s=60, interval_s=0.5,
                 what="both dispatchers beating")
        # When: one is killed without a chance to clean up
        a.popen.send_signal(signal.SIGKILL)
        a.popen.wait(timeout=10)
        # Then: it stops counting once its heartbeat is older than 2 s (known for a day)
        wait_for(lambda: alive() == {"alive": 1, "known": 2}, timeout_s=30, interval_s=0.5,
                 what="killed dispatcher no longer alive")
        # And a clean stop removes it at once; then status says no dispatcher, exit 1
        b.popen.send_signal(signal.SIGTERM)
        b.popen.wait(timeout=30)
        out = _status(s, "--json")
        data = json.loads(out.stdout)
        assert data["dispatchers"] == {"alive": 0, "known": 1}
        assert out.returncode == 1
        assert data["verdicts"][0]["problem"] == "no_dispatcher"  # workers' beats expired too
        assert "1 stopped sending heartbeats" in data["verdicts"][0]["message"]
    finally:
        for p in (a, b):
            if p.alive():
                p.stop(signal.SIGKILL)


def test_status_shows_every_part(settings: MeshSettings, r: redis.Redis) -> None:
    # Given: probe-coalesced out of SLA; a stream with unread entries, a queued task,
    # a dead letter, a live and a stale worker heartbeat, a held GPU item.
    s = _settings(settings)
    keys = _healthy(r, s)
    now = time.time()
    finished_run(RunLedger(r, keys), "probe-coalesced", ok=False, started_at=now - 7300, now=now - 7300)
    _stale(r, keys)
    r.xgroup_create(keys.stream(0), s.dispatcher.group, id="0", mkstream=True)
    for i in range(3):
        r.xadd(keys.stream(0), {"id": f"e{i}"})
    r.rpush(f"{keys.celery_prefix()}cpu", b"{}")
    _dead_letter(r, keys)
    r.hset(workers_key(keys), "w2@host", json.dumps({"queues": ["gpu"], "ts": now - 3600}))
    r.zadd(keys.gpu_held_order(), {"item-1": now})

    out = _status(s, "--json")

    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["out_of_sla"] == ["probe-coalesced"]
    wf = {w["workflow"]: w for w in data["workflows"]}
    assert wf["probe"]["within_sla"] and wf["probe"]["successes"] == 1
    assert not wf["probe-coalesced"]["within_sla"] and wf["probe-coalesced"]["failures"] == 1
    assert data["streams"][0]["lag"] == 3 and data["streams"][0]["published"] == 3
    assert data["queues"]["cpu"]["depth"] == 1
    assert data["queues"]["cpu"]["workers_alive"] == 1 and data["queues"]["io"]["processes"] == 2
    assert data["dlq"]["length"] == 1
    assert data["dlq"]["by_reason_type"][0] | {"last": None} == {
        "reason": "invalid", "type": "customer.updated", "added": 1, "last": None}
    assert data["gpu"]["held"] == 1
    assert {v["problem"] for v in data["verdicts"]} == {"stale_workflow", "dead_letters_growing"}
    table = _status(s)
    assert "OUT OF SLA" in table.stdout and "dispatchers alive: 1 of 1" in table.stdout


def test_status_exits_3_when_redis_is_unreachable(settings: MeshSettings) -> None:
    s = MeshSettings.load(settings.to_env() | {"MESH_REDIS_URL": "redis://127.0.0.1:1/0",
                                               "MESH_REDIS_SOCKET_CONNECT_TIMEOUT_S": "0.2",
                                               "MESH_REDIS_STARTUP_TIMEOUT_S": "0.5"})
    out = _status(s, "--json")
    assert out.returncode == 3  # Redis unusable (2 is bad configuration)
    assert "cannot connect to Redis" in out.stderr
