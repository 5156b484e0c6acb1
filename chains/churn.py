"""Churn: customer events -> merge profile -> features + score -> store -> alert.

Two workflows, both started by every customer event:

* ``customer-profile`` merges EVERY event into the customer's profile, uncoalesced:
  ``customer.updated`` carries only the changed fields, so no event may be dropped.
* ``churn`` is coalesced per customer (a burst of activity/updates is scored once, with
  the latest event): it merges its own (latest) event again, which is idempotent and
  guarantees the score reflects at least that event, then scores the stored profile
  with the promoted model, stores the score and, when it crossed
  ``workflows.churn_high_risk_threshold``, publishes ``churn.high_risk``.

Why not merge only in the coalesced run: coalescing keeps the latest event of the
window, and an update followed by an activity snapshot would lose the update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import chain

from worker_mesh.chains.registry import REGISTRY, Coalesce, On, RunContext
from worker_mesh.events.base import Envelope

if TYPE_CHECKING:
    from celery.canvas import Signature

VERSION = "1"
TRIGGERS = [On("customer.created"), On("customer.updated"), On("customer.activity")]


def _event(env: Envelope) -> dict[str, object]:
    return {"event_id": env.event_id, "type": env.type, "occurred_at": env.occurred_at.isoformat(),
            "payload": env.payload.model_dump(mode="json", exclude_none=True)}


@REGISTRY.workflow("customer-profile", on=TRIGGERS, version=VERSION, sla_s=3600)
def build_profile(env: Envelope, ctx: RunContext) -> Signature:
    """Merge every customer event into the customer's profile (idempotent)."""
    return ctx.sig("mesh.churn.merge_profile", ctx.meta, _event(env), step="merge")


@REGISTRY.workflow(
    "churn",
    on=TRIGGERS,
    version=VERSION,
    # Short window: an activity burst is scored once, a risky change within seconds.
    coalesce=Coalesce(window_s=2.0, max_wait_s=10.0),
    sla_s=3600,
)
def build(env: Envelope, ctx: RunContext) -> Signature:
    """Score a customer's churn risk after a profile change; alert on high risk."""
    return chain(
        ctx.sig("mesh.churn.merge_profile", ctx.meta, _event(env), step="merge"),
        ctx.sig("mesh.churn.score", ctx.meta, step="score"),
        ctx.sig("mesh.churn.store", ctx.meta, step="store"),
    )
