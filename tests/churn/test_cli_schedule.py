"""`mesh train` / `mesh models` as a user runs them (real subprocesses), and the
retraining schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from celery.schedules import crontab

from tests.support.procs import ROOT, child_env
from worker_mesh.events.wire import decode
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.runtime import Runtime
from worker_mesh.workers.schedule import beat_schedule


def mesh(settings: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT, env=child_env(settings),
                          capture_output=True, text=True, timeout=180)


def test_train_list_and_rollback(settings: MeshSettings) -> None:
    first = mesh(settings, "train", "--samples", "1200", "--seed", "1", "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["promoted"] and out["candidate_metrics"]["roc_auc"] > 0.75

    human = mesh(settings, "train", "--samples", "3000", "--seed", "2")
    assert human.returncode == 0, human.stderr
    assert "ROC AUC" in human.stdout and "held-out" in human.stdout

    listed = json.loads(mesh(settings, "models", "list", "--json").stdout)
    versions = [v["version"] for v in listed["versions"]]
    assert len(versions) == 2 and out["candidate_version"] in versions
    assert all("roc_auc" in v["metrics"] for v in listed["versions"])

    rolled = mesh(settings, "models", "promote", out["candidate_version"], "--no-rescore", "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["promoted"] == out["candidate_version"]
    listed = json.loads(mesh(settings, "models", "list", "--json").stdout)
    assert listed["promoted"] == out["candidate_version"] and listed["seq"] >= 2

    missing = mesh(settings, "models", "promote", "ffffffffffffffff", "--no-rescore")
    assert missing.returncode != 0 and "not registered" in missing.stderr


def test_schedule_entry_follows_the_settings() -> None:
    s = MeshSettings.load({"MESH_WORKFLOWS_RETRAIN_CRON": "30 2 * * 1"})
    import chains.retrain  # noqa: F401  (registers the entry, as `mesh beat` does)

    entry = beat_schedule(s)["churn-retrain"]
    assert entry["task"] == "mesh.retrain.request"
    assert entry["schedule"] == crontab(minute="30", hour="2", day_of_week="1")


def test_scheduled_request_is_one_event_per_hour(settings: MeshSettings) -> None:
    from worker_mesh.workers.churn.lifecycle import scheduled_request

    rt = Runtime(settings)
    at = datetime(2026, 11, 22, 3, 0, 5, tzinfo=UTC)
    scheduled_request(rt, at)
    scheduled_request(rt, at.replace(minute=1))  # a re-sent tick: same idempotency key
    keys = Keys(settings.redis.key_prefix)
    envs = [decode(f, settings.streams.max_payload_bytes)
            for p in range(settings.streams.partitions) for _, f in rt.redis.xrange(keys.stream(p))]
    assert [e.type for e in envs] == ["model.retrain_requested"] * 2
    assert len({e.idempotency_key for e in envs}) == 1
    assert envs[0].payload.reason == "scheduled"
