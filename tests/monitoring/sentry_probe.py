"""Test-only tasks and a beat entry for the Sentry test (loaded into real worker and
beat processes via ``MESH_CELERY_EXTRA_MODULES``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker_mesh.chains.registry import REGISTRY, RunContext
from worker_mesh.events.base import Envelope
from worker_mesh.mesh.errors import PermanentError, TransientError
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

if TYPE_CHECKING:
    from celery.canvas import Signature


# -- a chain whose third step fails, a chord whose member fails (identity tags) --------
@task("mesh.test.sentry.step")
def step(rt: Any, previous: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A passing step: returns a result that is NOT run metadata (what the next step of a
    chain gets as its first argument)."""
    return {"ok": True, "n": 1}


@task("mesh.test.sentry.step_fail")
def step_fail(rt: Any, *args: Any) -> None:
    metrics.model_in_use("churn", "v7")
    metrics.model_in_use("embedding", "e1")
    raise PermanentError("bad step")


def _chain(env: Envelope, ctx: RunContext) -> Signature:
    from celery import chain

    return chain(ctx.sig("mesh.test.sentry.step", None, ctx.meta, step="one"),
                 ctx.sig("mesh.test.sentry.step", ctx.meta, step="two"),
                 ctx.sig("mesh.test.sentry.step_fail", ctx.meta, step="three"))


def _chord(env: Envelope, ctx: RunContext) -> Signature:
    from celery import chord

    header = [ctx.sig("mesh.test.sentry.step", None, ctx.meta, step="member-0"),
              ctx.sig("mesh.test.sentry.step_fail", ctx.meta, 1, step="member-1")]
    return chord(header, ctx.sig("mesh.test.sentry.step", ctx.meta, step="done"))


if "sentry-chain" not in REGISTRY.workflows:
    REGISTRY.workflow("sentry-chain", on=[], version="3")(_chain)
    REGISTRY.workflow("sentry-chord", on=[], version="4")(_chord)
