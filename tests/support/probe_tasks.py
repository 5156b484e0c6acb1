"""Test-only tasks and workflows, loaded into real workers via
``MESH_CELERY_EXTRA_MODULES=["tests.support.probe_tasks"]``.

``mesh.probe.record`` appends its arguments to a Redis list so tests can see what ran.
The ``probe`` workflow runs it for ``customer.activity`` and ``content.deleted``; for a
customer id starting with ``fail-`` it runs ``mesh.probe.fail`` instead, which fails for
good (the run is dead-lettered by the error callback) unless the Redis key
``probe:fixed`` is set (then it records like the other).
"""

from __future__ import annotations

import json
from typing import Any

from celery import shared_task

from worker_mesh.chains.registry import REGISTRY, Coalesce, On, RunContext
from worker_mesh.events.base import Envelope
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.workers.kinds import STANDARD, task


@task("mesh.probe.record", kind=STANDARD)
def record(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    rt.redis.rpush(rt.keys.ns("probe", "runs"), json.dumps({"meta": meta, "event": event}))
    return {"ok": True, "run_id": meta["run_id"]}


@task("mesh.probe.fail", kind=STANDARD)
def fail(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    if not rt.redis.exists(rt.keys.ns("probe", "fixed")):
        raise PermanentError(f"probe failure for {event['key']}")
    return record(rt, meta, event)


def _build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    name = "mesh.probe.record"
    if env.entity_key.startswith("customer:fail-"):
        name = "mesh.probe.fail"
    return ctx.sig(name, ctx.meta | {"coalesced": ctx.coalesced},
                   {"event_id": env.event_id, "type": env.type, "key": env.entity_key})


if "probe" not in REGISTRY.workflows:
    REGISTRY.workflow("probe", on=[On("customer.activity"), On("content.deleted")])(_build)
    REGISTRY.workflow("probe-coalesced", on=[On("customer.updated")],
                      coalesce=Coalesce(window_s=0.5, max_wait_s=3.0))(_build)


@shared_task(name="mesh.probe.plain")
def plain(*args: Any) -> dict[str, Any]:
    """A plain Celery task (no @task/@step): it can be a step of a run too."""
    return {"plain": True, "args": len(args)}
