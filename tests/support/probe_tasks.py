"""Test-only tasks and a workflow, loaded into real workers via
``MESH_CELERY_EXTRA_MODULES=tests.support.probe_tasks``.

``probe.record`` appends its arguments to a Redis list so tests can see what ran.
"""

from __future__ import annotations

import json
from typing import Any

from chains.registry import REGISTRY, Coalesce, On, RunContext
from events.base import Envelope
from workers.kinds import STANDARD, task


@task("mesh.probe.record", kind=STANDARD)
def record(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    rt.redis.rpush(rt.keys.ns("probe", "runs"), json.dumps({"meta": meta, "event": event}))
    return {"ok": True, "run_id": meta["run_id"]}


def _build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    return ctx.sig("mesh.probe.record", ctx.meta | {"coalesced": ctx.coalesced},
                   {"event_id": env.event_id, "type": env.type, "key": env.entity_key})


if "probe" not in REGISTRY.workflows:
    REGISTRY.workflow("probe", on=[On("customer.activity"), On("content.deleted")])(_build)
    REGISTRY.workflow("probe-coalesced", on=[On("customer.updated")],
                      coalesce=Coalesce(window_s=0.5, max_wait_s=3.0))(_build)
