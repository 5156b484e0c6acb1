"""Re-embedding tasks: thin wrappers around ``workers.embedding.pipeline``.

``plan`` runs on the CPU queue (chunking is cheap and validates the size before any GPU
time is spent); ``embed`` needs the model, so it goes to the ``gpu`` queue;
``reembed_all`` is bulk GPU work that may wait for the off-peak window (``gpu-batch``).
"""

from __future__ import annotations

from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.embedding import pipeline
from worker_mesh.workers.kinds import INFERENCE, STANDARD, task


@task("mesh.embedding.plan", kind=STANDARD, resource=Resource.CPU)
def plan(rt: Any, meta: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """Chunk a document (``{content_id, title, body, version, event_id}``)."""
    return pipeline.plan(rt.settings, doc)


@task("mesh.embedding.embed", kind=INFERENCE, resource=Resource.GPU)
def embed(rt: Any, plan_: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Embed the changed chunks of a plan (the previous step's result) and upsert."""
    return pipeline.embed_plan(rt, plan_, meta)


@task("mesh.embedding.delete", kind=STANDARD, resource=Resource.CPU)
def delete(rt: Any, meta: dict[str, Any], content_id: str, event_id: str = "") -> dict[str, Any]:
    """Remove every vector of a deleted document."""
    return pipeline.delete(rt, content_id, meta, event_id)


# The whole corpus in one task: bounded by the global limit, not inference's 10 min.
@task("mesh.embedding.reembed_all", kind=INFERENCE, resource=Resource.GPU_BULK,
      time_limit=None, soft_time_limit=None)
def reembed_all(rt: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """After a model upgrade: move every document to the current model version."""
    return pipeline.reembed_all(rt, meta)
