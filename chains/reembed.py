"""Re-embedding: content created/updated -> chunk -> embed changed chunks -> upsert;
content deleted -> delete its vectors.

One workflow for all three events, so the dispatcher's per-(workflow, entity)
coalescing collapses a burst of edits (or an edit followed by a delete) into one run
with the latest event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import chain

from worker_mesh.chains.registry import REGISTRY, Coalesce, On, RunContext
from worker_mesh.events.base import Envelope

if TYPE_CHECKING:
    from celery.canvas import Signature

VERSION = "1"


@REGISTRY.workflow(
    "reembed",
    on=[On("content.created"), On("content.updated"), On("content.deleted")],
    version=VERSION,
    coalesce=Coalesce(window_s=0.5, max_wait_s=5.0),
    sla_s=3600,
)
def build(env: Envelope, ctx: RunContext) -> Signature:
    """Keep the vectors of a document in step with its text."""
    p: Any = env.payload  # ContentCreated | ContentUpdated | ContentDeleted
    if env.type == "content.deleted":
        return ctx.sig("mesh.embedding.delete", ctx.meta, p.content_id, env.event_id,
                       step="delete")
    doc = {"content_id": p.content_id, "title": p.title, "body": p.body,
           "version": p.version, "event_id": env.event_id}
    return chain(
        ctx.sig("mesh.embedding.plan", ctx.meta, doc, step="plan"),
        ctx.sig("mesh.embedding.embed", ctx.meta, step="embed"),
    )
