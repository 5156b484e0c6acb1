"""Retraining of the churn model: on ``model.retrain_requested`` and on a beat schedule.

The schedule (``workflows.retrain_cron``) does not train by itself: its task publishes a
``model.retrain_requested`` event (one per scheduled minute, by idempotency key), so a
scheduled retraining goes through the same dispatcher, audit trail and workflow as an
on-demand one. The workflow trains a candidate, evaluates it and the promoted model on
the same held-out set, promotes it only if it is not worse, records both metrics and,
after a promotion, starts the rescoring of all customers (``churn-rescore``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ModelRetrainRequested
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.schedule import SCHEDULE_BUILDERS

if TYPE_CHECKING:
    from celery.canvas import Signature

VERSION = "1"


@REGISTRY.workflow(
    "retrain",
    on=[On("model.retrain_requested", where=lambda env: getattr(env.payload, "model", None) == "churn",
           description="model == churn")],
    version=VERSION,
    sla_s=8 * 86400,  # weekly schedule plus a day
)
def build(env: Envelope, ctx: RunContext) -> Signature:
    """Train a churn model candidate; promote it only if it is not worse."""
    p = cast(ModelRetrainRequested, env.payload)
    request = {"event_id": env.event_id, "samples": p.samples, "reason": p.reason,
               "occurred_at": env.occurred_at.isoformat()}
    return ctx.sig("mesh.retrain.churn", ctx.meta, request, step="train")


def crontab_of(expr: str) -> Any:
    """A Celery crontab from ``minute hour day month weekday``."""
    from celery.schedules import crontab

    from worker_mesh.mesh.errors import ConfigError

    parts = expr.split()
    if len(parts) != 5:
        raise ConfigError(f"workflows.retrain_cron must have 5 fields, got {expr!r}")
    minute, hour, dom, month, dow = parts
    return crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)


def schedule_entry(settings: MeshSettings) -> dict[str, Any]:
    return {"task": "mesh.retrain.request", "schedule": crontab_of(settings.workflows.retrain_cron),
            "args": (), "options": {"expires": 3600}}


SCHEDULE_BUILDERS["churn-retrain"] = schedule_entry
