"""Test-only workflows of the run-history tests, loaded into workers and dispatchers
with ``MESH_CELERY_EXTRA_MODULES=["tests.runs.flows"]``.

``runs-slow`` (``supersede=True``) runs for ``content.deleted`` events of the producer
``runs-test``: step ``first`` sleeps the seconds named by the content id
(``slow-<seconds>-<anything>``) and records when it started and ended; step ``second``
records that it ran. A newer event for the same content supersedes a run in flight.
"""

from __future__ import annotations

import time
from typing import Any

from celery import chain

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.kinds import STANDARD, task

PRODUCER = "runs-test"
OLD_EMBEDDING_VERSION = "all-MiniLM-L6-v2@000000000old"
"""What ``tests.runs.old_embedder`` files a worker's vectors under (a previous release)."""


def _seconds(content_id: str) -> float:
    parts = content_id.split("-")
    return float(parts[1]) if len(parts) > 2 and parts[0] == "slow" else 0.0


@task("mesh.runstest.first", kind=STANDARD, resource=Resource.IO)
def first(rt: Any, meta: dict[str, Any], content_id: str) -> dict[str, Any]:
    key = rt.keys.ns("runstest", meta["run_id"])
    rt.redis.hset(key, "first_started", time.time())
    time.sleep(_seconds(content_id))
    rt.redis.hset(key, "first_ended", time.time())
    return {"content_id": content_id, "wrote": f"runstest:{content_id}"}


@task("mesh.runstest.second", kind=STANDARD, resource=Resource.IO)
def second(rt: Any, prev: dict[str, Any], meta: dict[str, Any]) -> str:
    rt.redis.hset(rt.keys.ns("runstest", meta["run_id"]), "second_ran", time.time())
    return str(prev["content_id"])


@REGISTRY.workflow("runs-slow", on=[On("content.deleted", where=lambda env: env.producer == PRODUCER)],
                   supersede=True, sla_s=3600)
def build(env: Envelope, ctx: RunContext) -> Any:
    """Two steps; the first one slow (test workflow)."""
    cid = env.payload.content_id  # type: ignore[attr-defined]
    return chain(ctx.sig("mesh.runstest.first", ctx.meta, cid, step="first"),
                 ctx.sig("mesh.runstest.second", ctx.meta, step="second"))
