"""Content generation: ``content.requested`` (an article) or ``churn.high_risk`` (a
retention message for that customer) -> brief -> generate + SEO check (retried with
feedback, dead-lettered when it keeps failing) -> store and publish ``content.updated``,
which starts the ``reembed`` workflow: a cross-workflow dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import chain

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope
from worker_mesh.events.wire import encode
from worker_mesh.mesh.flow.declare import Priority

if TYPE_CHECKING:
    from celery.canvas import Signature

VERSION = "1"
_NO_LIMIT = 1 << 30  # the event was validated on its way in; keep it whole for the DLQ


@REGISTRY.workflow(
    "content",
    on=[On("content.requested"),
        On("churn.high_risk", description="a retention message for the customer")],
    version=VERSION,
    sla_s=6 * 3600,
)
def build(env: Envelope, ctx: RunContext) -> Signature:
    """Write content for a request or an at-risk customer, check it, publish it."""
    payload = env.payload.model_dump(mode="json")
    steps = [
        ctx.sig("mesh.content.prepare", ctx.meta, env.type, payload, env.event_id, step="prepare"),
        ctx.sig("mesh.content.generate", ctx.meta, encode(env, _NO_LIMIT), step="generate"),
        ctx.sig("mesh.content.publish", ctx.meta, step="publish"),
    ]
    broker_priority = Priority.parse(payload.get("priority")).broker_priority
    if broker_priority:  # bulk: behind every other message of its queues
        for sig in steps:
            sig.set(priority=broker_priority)
    return chain(*steps)
