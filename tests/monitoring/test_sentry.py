"""Sentry, end to end: a real worker and a real beat with the real SDK, reporting to a
local HTTP server standing in for Sentry; the test reads the envelopes it received."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.monitoring import sentry_collector
from tests.support.procs import Proc, start, wait_for
from worker_mesh.chains.loader import load_workflows
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app


@pytest.fixture
def collector() -> Iterator[sentry_collector.Collector]:
    c = sentry_collector.start()
    yield c
    c.stop()


def _errors(c: sentry_collector.Collector, task: str) -> list[dict]:
    return [e for e in c.of_type("event")
            if e.get("tags", {}).get("task") == task and e.get("exception")]


def test_failures_dead_letters_and_beat_check_ins_reach_sentry(
        settings: MeshSettings, r: redis.Redis, collector: sentry_collector.Collector,
        tmp_path: Path) -> None:
    # Given: a worker and a beat reporting to the local collector.
    s = MeshSettings.load(settings.to_env() | {
        "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks", "tests.monitoring.sentry_probe"]',
        "MESH_MONITORING_SENTRY_DSN": collector.dsn,
        "MESH_MONITORING_ENVIRONMENT": "test",
    })
    keys = Keys(s.redis.key_prefix)
    procs: list[Proc] = [
        start("beat", ["beat"], s, tmp_path / "logs"),
        start("worker", ["worker", "-Q", "cpu", "-c", "1"], s, tmp_path / "logs"),
    ]
    try:
        # The test process only submits: its app has no DSN (no SDK in pytest).
        client_settings = MeshSettings.load({k: v for k, v in s.to_env().items()
                                             if k != "MESH_MONITORING_SENTRY_DSN"})
        load_workflows(client_settings)
        app = create_app(client_settings)
        meta = {"run_id": "run-1", "workflow": "probe", "workflow_version": "1"}
        payload = {"type": "customer.updated", "customer_id": "42",
                   "email": "jane.doe@example.com", "plan": "pro"}

        # When: a task that always fails transiently (2 retries), a critical task,
        # and dead-lettered events.
        app.signature("mesh.test.sentry.flaky", args=(meta, payload)).apply_async()
        app.signature("mesh.test.sentry.critical", args=(meta,)).apply_async()
        app.signature("mesh.test.sentry.deadletter", args=("invalid", "customer.updated")).apply_async()

        # Then: the flaky task is reported once, after its retries, with its tags.
        wait_for(lambda: _errors(collector, "mesh.test.sentry.flaky"), timeout_s=90,
                 what="the flaky task's failure in Sentry")
        assert int(r.get(keys.ns("test", "sentry", "attempts")) or 0) == 3
        [event] = _errors(collector, "mesh.test.sentry.flaky")
        tags = event["tags"]
        assert tags["workflow"] == "probe"
        assert tags["event_type"] == "customer.updated"
        assert tags["task_kind"] == "test_quick"
        assert "churn=v7" in tags["model_version"]
        assert event["environment"] == "test"
        assert "provider down" in json.dumps(event["exception"])

        # The critical task: at once, as fatal.
        crit = wait_for(lambda: _errors(collector, "mesh.test.sentry.critical"), timeout_s=60,
                        what="the critical task's failure in Sentry")
        assert crit[0]["level"] == "fatal" and crit[0]["tags"]["task_kind"] == "critical"

        # The dead letter: a warning grouped by reason and event type.
        def dead_letters() -> list[dict]:
            return [e for e in collector.of_type("event")
                    if e.get("tags", {}).get("dead_letter_reason") == "invalid"]

        [dl] = wait_for(dead_letters, timeout_s=60, what="the dead letter in Sentry")
        assert dl["level"] == "warning" and dl["tags"]["event_type"] == "customer.updated"
        assert dl["fingerprint"] == ["mesh-dead-letter", "invalid", "customer.updated"]

        # Personal data never left the worker.
        everything = collector.all_bytes()
        assert b"jane.doe@example.com" not in everything
        assert b"[Filtered]" in everything

        # Beat's schedule: a cron check-in in progress (beat) and ok (the worker).
        def check_ins() -> set[str]:
            return {c.get("status", "") for c in collector.of_type("check_in")
                    if c.get("monitor_slug") == "test-sentry-tick"}

        wait_for(lambda: {"in_progress", "ok"} <= check_ins(), timeout_s=150,
                 what="the beat entry's check-ins")
        assert len(_errors(collector, "mesh.test.sentry.flaky")) == 1, "retries reported as issues"
    finally:
        for p in procs:
            p.stop()
