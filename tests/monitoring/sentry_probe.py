"""Test-only tasks and a beat entry for the Sentry test (loaded into real worker and
beat processes via ``MESH_CELERY_EXTRA_MODULES``)."""

from __future__ import annotations

from typing import Any

from worker_mesh.mesh.errors import TransientError
from worker_mesh.monitoring import metrics
from worker_mesh.workers.kinds import CRITICAL, TaskKind, task
from worker_mesh.workers.schedule import SCHEDULE_BUILDERS

QUICK = TaskKind("test_quick", max_retries=2, backoff_s=0.05, backoff_max_s=0.1, jitter=False)


@task("mesh.test.sentry.flaky", kind=QUICK)
def flaky(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> None:
    """Always fails transiently: retried twice, then fails for good."""
    metrics.model_in_use("churn", "v7")
    rt.redis.incr(rt.keys.ns("test", "sentry", "attempts"))
    raise TransientError("provider down")


@task("mesh.test.sentry.critical", kind=CRITICAL)
def critical(rt: Any, meta: dict[str, Any]) -> None:
    raise RuntimeError("ledger mismatch")


@task("mesh.test.sentry.deadletter")
def deadletter(rt: Any, reason: str, event_type: str) -> None:
    metrics.dead_lettered(reason, event_type=event_type)


@task("mesh.test.sentry.tick")
def tick(rt: Any) -> str:
    rt.redis.incr(rt.keys.ns("test", "sentry", "ticks"))
    return "ok"


def _tick_entry(settings: Any) -> dict[str, Any]:
    from celery.schedules import crontab

    return {"task": "mesh.test.sentry.tick", "schedule": crontab(minute="*")}


SCHEDULE_BUILDERS["test-sentry-tick"] = _tick_entry
