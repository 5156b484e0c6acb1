"""`mesh exporter`'s collector against a real Redis: running tasks past their limit,
leftovers of killed workers cleaned up, workflow freshness and SLA series."""

from __future__ import annotations

import json
import time

import redis
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.runs import finished_run
from worker_mesh.chains.registry import Workflow
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring.celery_hooks import running_key, workers_key
from worker_mesh.monitoring.collector import MeshCollector


def _scrape(r: redis.Redis, settings: MeshSettings, workflows: list[Workflow]) -> str:
    reg = CollectorRegistry()
    reg.register(MeshCollector(r, settings, lambda: workflows))
    return generate_latest(reg).decode()


def test_stuck_tasks_freshness_and_cleanup(settings: MeshSettings, r: redis.Redis) -> None:
    # Given: a training task running for 700 s (limit 600), a young one, the leftover of
    # a worker killed two hours ago, a heartbeat silent for two days, and a fresh run.
    keys = Keys(settings.redis.key_prefix)
    now = time.time()
    running = running_key(keys)
    r.hset(running, "t1", json.dumps({"task": "mesh.churn.train", "queue": "gpu-batch",
                                      "started": now - 700, "limit_s": 600}))
    r.hset(running, "t2", json.dumps({"task": "mesh.probe.record", "queue": "cpu",
                                      "started": now - 1, "limit_s": 600}))
    r.hset(running, "t3", json.dumps({"task": "mesh.probe.record", "queue": "cpu",
                                      "started": now - 7200 * 2, "limit_s": 600}))
    r.hset(workers_key(keys), "old@host", json.dumps({"queues": ["cpu"], "ts": now - 2 * 86400}))
    r.hset(workers_key(keys), "live@host", json.dumps({"queues": ["gpu"], "ts": now,
                                                      "concurrency": 1}))
    finished_run(RunLedger(r, keys), "probe", ok=True, started_at=now - 5, now=now - 1)
    wf = Workflow("probe", "1", (), lambda env, ctx: None, sla_s=900)  # type: ignore[arg-type,return-value]

    # When
    text = _scrape(r, settings, [wf])

    # Then
    assert 'mesh_task_running_max_age_seconds{task="mesh.churn.train"} 70' in text
    assert 'mesh_task_time_limit_seconds{task="mesh.churn.train"} 600.0' in text
    assert 'mesh_tasks_running{queue="cpu"} 1.0' in text
    assert 'mesh_tasks_running{queue="gpu-batch"} 1.0' in text
    assert 'mesh_workers_alive{queue="gpu"} 1.0' in text
    assert 'mesh_workers_alive{queue="cpu"} 0.0' in text
    assert 'mesh_workflow_sla_seconds{workflow="probe"} 900.0' in text
    assert 'mesh_workflow_finished_total{outcome="succeeded",workflow="probe"} 1.0' in text
    assert "mesh_workflow_last_success_timestamp_seconds{workflow=\"probe\"}" in text
    assert "mesh_exporter_up 1.0" in text
    assert set(r.hkeys(running)) == {b"t1", b"t2"}, "the killed worker's entry is removed"
    assert r.hkeys(workers_key(keys)) == [b"live@host"]


def test_exporter_reports_down_when_redis_is_gone(settings: MeshSettings) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    text = _scrape(dead, settings, [])
    assert "mesh_exporter_up 0.0" in text
    assert "mesh_queue_length" not in text
