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


def _value(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exported")


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


def test_sla_and_failure_threshold_come_from_settings(settings: MeshSettings,
                                                      r: redis.Redis) -> None:
    # Given: the registry says 900 s, the settings say 60 s for probe and name a
    # workflow that does not exist.
    s = MeshSettings.load(settings.to_env() | {
        "MESH_WORKFLOWS_SLA_S": '{"probe": 60, "nope": 5}',
        "MESH_WORKFLOWS_FAILING_ALERT_RUNS": '{"probe": 2}'})
    wfs = [Workflow(n, "1", (), lambda env, ctx: None, sla_s=900)  # type: ignore[arg-type,return-value]
           for n in ("probe", "other")]

    # When
    text = _scrape(r, s, wfs)

    # Then
    assert 'mesh_workflow_sla_seconds{workflow="probe"} 60.0' in text
    assert 'mesh_workflow_sla_seconds{workflow="other"} 900.0' in text
    assert 'mesh_workflow_failing_alert_runs{workflow="probe"} 2.0' in text
    assert 'mesh_workflow_failing_alert_runs{workflow="other"} 3.0' in text
    assert 'mesh_runs_overdue{workflow="probe"} 0.0' in text
    from worker_mesh.monitoring.snapshot import take

    errors = take(r, s, wfs).errors
    assert "workflows.sla_s names no registered workflow: nope" in errors


def test_dead_letters_are_counted_by_reason_and_type_once(settings: MeshSettings,
                                                          r: redis.Redis) -> None:
    # Given: two invalid customer.updated, one poison of a type outside the catalog,
    # one garbage entry without a type.
    keys = Keys(settings.redis.key_prefix)
    for reason, etype in (("invalid", "customer.updated"), ("invalid", "customer.updated"),
                          ("poison", "x.made.up"), ("invalid", "")):
        r.xadd(keys.dlq, {"reason_code": reason, "type": etype, "fields": '{"type": "zz"}'})

    # When: scraped twice (a second exporter replica, or the next scrape)
    _scrape(r, settings, [])
    text = _scrape(r, settings, [])

    # Then: each dead letter counted once, labels bounded
    assert 'mesh_dlq_entries_added_total{reason="invalid",type="customer.updated"} 2.0' in text
    assert 'mesh_dlq_entries_added_total{reason="poison",type="other"} 1.0' in text
    assert 'mesh_dlq_entries_added_total{reason="invalid",type="unknown"} 1.0' in text
    newest = float(r.xrevrange(keys.dlq, count=1)[0][0].decode().split("-")[0]) / 1000
    assert _value(text, "mesh_dlq_last_added_timestamp_seconds",
                  reason="invalid", type="unknown") == newest

    # And a new dead letter is added to its pair
    r.xadd(keys.dlq, {"reason_code": "poison", "type": "x.made.up"})
    assert 'mesh_dlq_entries_added_total{reason="poison",type="other"} 2.0' in _scrape(
        r, settings, [])


def test_dispatchers_alive_come_from_heartbeats(settings: MeshSettings, r: redis.Redis) -> None:
    # Given: a consumer group with a dead member, one fresh heartbeat, one a minute old
    from worker_mesh.monitoring import heartbeats

    keys = Keys(settings.redis.key_prefix)
    r.xgroup_create(keys.stream(0), settings.dispatcher.group, id="0", mkstream=True)
    r.xgroup_createconsumer(keys.stream(0), settings.dispatcher.group, "killed")
    now = time.time()
    heartbeats.beat(r, keys, "live", now)
    heartbeats.beat(r, keys, "killed", now - 60)

    text = _scrape(r, settings, [])

    assert "mesh_dispatchers_alive 1.0" in text
    assert "mesh_dispatchers_known 2.0" in text


def test_failures_since_the_last_success_are_counted_between_scrapes(
        settings: MeshSettings, r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    stats = RunLedger(r, keys)
    wf = Workflow("probe", "1", (), lambda env, ctx: None)  # type: ignore[arg-type,return-value]
    now = time.time()

    def streak() -> float:
        return _value(_scrape(r, settings, [wf]), "mesh_workflow_failures_since_success",
                      workflow="probe")

    # Given: a workflow that never succeeded fails twice -> both count
    for _ in range(2):
        finished_run(stats, "probe", ok=False, started_at=now, now=now)
    assert streak() == 2
    # When it succeeds, the streak ends
    finished_run(stats, "probe", ok=True, started_at=now, now=now)
    assert streak() == 0
    # And three failures after it are three in a row
    for i in range(3):
        finished_run(stats, "probe", ok=False, started_at=now, now=now)
        assert streak() == i + 1


def test_back_to_back_off_peak_windows_do_not_close_at_midnight(settings: MeshSettings,
                                                                 r: redis.Redis) -> None:
    from datetime import UTC, datetime

    from worker_mesh.monitoring.snapshot import take

    s = MeshSettings.load(settings.to_env() | {"MESH_GPU_OFFPEAK_WINDOWS": '["00:00-24:00 UTC"]'})
    late = datetime(2026, 12, 1, 23, 50, tzinfo=UTC).timestamp()
    snap = take(r, s, [], now=late)
    assert snap.offpeak_open is True
    assert snap.offpeak_end is not None and snap.offpeak_end - late > 86_400, "not 10 min away"
    # A window with a real end still ends then.
    s2 = MeshSettings.load(settings.to_env() | {"MESH_GPU_OFFPEAK_WINDOWS": '["22:00-24:00 UTC"]'})
    assert take(r, s2, [], now=late).offpeak_end == late + 600
