"""The metrics facade and its helpers, without a broker: bounded labels, state kept in
Redis, multiprocess mode switched on after import, Sentry's scrubbing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import redis
from prometheus_client import REGISTRY

from tests.support.procs import ROOT
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import metrics, sentry


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_unknown_event_types_and_odd_labels_fold_into_other() -> None:
    before = _value("mesh_events_published_total", type="other")
    metrics.event_published("customer.updated")
    metrics.event_published("customer.updated.42-jane@example.com")
    metrics.event_outcome("no.such.type", "started")
    assert _value("mesh_events_published_total", type="other") == before + 1
    assert _value("mesh_events_outcome_total", type="other", outcome="started") >= 1
    assert metrics.bounded("a b{c}") == "other"
    assert metrics.bounded("fine", {"x"}) == "other"


def test_facade_never_raises() -> None:
    metrics.dispatch_latency("not a number")  # type: ignore[arg-type]
    metrics.task_finished("t", "cpu", None, "weird")
    metrics.gpu_batch(-1, -1.0)


def test_result_staleness_is_kept_in_redis(settings: MeshSettings, r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    metrics.bind_store(r, keys)
    try:
        metrics.result_updated("churn", "customer:1", 100.0)
        metrics.result_updated("churn", "customer:2", 50.0)
        metrics.result_updated("churn", "customer:1", 200.0)
        oldest = r.zrange(metrics.results_key(keys, "churn"), 0, 0, withscores=True)
        assert oldest == [(b"customer:2", 50.0)]
        metrics.result_removed("churn", "customer:2")
        assert r.zcard(metrics.results_key(keys, "churn")) == 1
    finally:
        metrics._store.clear()


def test_model_info_switches_versions() -> None:
    metrics.model_in_use("unit-model", "1")
    metrics.model_in_use("unit-model", "2")
    assert _value("mesh_model_info", model="unit-model", version="1") == 0
    assert _value("mesh_model_info", model="unit-model", version="2") == 1


def test_multiprocess_mode_can_be_enabled_after_import(tmp_path: Path) -> None:
    # An unlabelled histogram created at import must still reach the shared files.
    code = textwrap.dedent(f"""
        import os
        from worker_mesh.monitoring import metrics, multiproc
        multiproc.enable({str(tmp_path)!r})
        if os.fork() == 0:
            metrics.dispatch_latency(0.2)
            metrics.workflow_run("probe", "succeeded")
            os._exit(0)
        os.wait()
        metrics.dispatch_latency(0.3)
        from prometheus_client import generate_latest
        print(generate_latest(multiproc.registry()).decode())
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "mesh_dispatch_latency_seconds_count 2.0" in out.stdout
    assert 'mesh_workflow_runs_total{outcome="succeeded",workflow="probe"} 1.0' in out.stdout


def test_sentry_scrub_removes_sensitive_fields_at_any_depth() -> None:
    event = {"extra": {"celery-job": {"args": [{"workflow": "churn"},
                                               {"customer_id": "42", "Email": "a@b.c",
                                                "nested": [{"body": "secret text"}]}]}}}
    saved = sentry._state["fields"]
    sentry._state["fields"] = frozenset({"email", "body"})
    try:
        out = sentry.before_send(event, {})
    finally:
        sentry._state["fields"] = saved
    args = out["extra"]["celery-job"]["args"]
    assert args[1]["Email"] == "[Filtered]" and args[1]["nested"][0]["body"] == "[Filtered]"
    assert args[1]["customer_id"] == "42" and args[0]["workflow"] == "churn"
