"""Test-only event, workflow and GPU tasks for the simulator's cross-check, loaded into
the dispatcher and the worker with ``MESH_CELERY_EXTRA_MODULES=["tests.gpu_pool.sim_probe"]``.

``sim.gpu_item`` starts a one-task run: ``mesh.test.sim_gpu`` (urgent, queue ``gpu``) or
``mesh.test.sim_gpu_bulk`` (bulk: the starter hands it to the real deferral). Both are
micro-batched (task type ``simecho``); the forward pass sleeps ``FIXED_S + PER_ITEM_S *
batch`` (a node whose throughput curve is known exactly) and records, per pass, its
start time and when each item entered its queue (the event's ``sent_at``; for a
released item the releaser's ``mesh_sent_at`` header).
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import Field

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.catalog import CATALOG, Id
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.kinds import CRITICAL, task
from worker_mesh.workers.tasks.gpu import run_batched

FIXED_S = 0.2
PER_ITEM_S = 0.05
TYPE = "sim.gpu_item"


class SimGpuItem(Event):
    event_type = TYPE
    entity_kind = "simitem"
    entity_field = "item_id"

    item_id: Id
    urgent: bool
    sent_at: float = Field(ge=0)


if TYPE not in CATALOG.names():
    CATALOG.register(SimGpuItem)


def passes_key(rt: Any) -> str:
    return str(rt.keys.ns("test", "sim_passes"))


def _one(rt: Any, item: dict[str, Any]) -> None:
    from celery import current_task

    sent = getattr(current_task.request, "mesh_sent_at", None) or item["sent_at"]

    def forward(entered: list[list[Any]]) -> list[None]:
        rt.redis.rpush(passes_key(rt), json.dumps({"start": time.time(), "items": entered}))
        time.sleep(FIXED_S + PER_ITEM_S * len(entered))
        return [None] * len(entered)

    run_batched(rt, "simecho", forward, [float(sent), bool(item["urgent"])])


@task("mesh.test.sim_gpu", kind=CRITICAL, resource=Resource.GPU)
def sim_gpu(rt: Any, meta: dict[str, Any], item: dict[str, Any]) -> None:
    _one(rt, item)


@task("mesh.test.sim_gpu_bulk", kind=CRITICAL, resource=Resource.GPU_BULK)
def sim_gpu_bulk(rt: Any, meta: dict[str, Any], item: dict[str, Any]) -> None:
    _one(rt, item)


def _build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    p: Any = env.payload
    name = "mesh.test.sim_gpu" if p.urgent else "mesh.test.sim_gpu_bulk"
    return ctx.sig(name, ctx.meta, {"urgent": p.urgent, "sent_at": p.sent_at})


if "sim-gpu" not in REGISTRY.workflows:
    REGISTRY.workflow("sim-gpu", on=[On(TYPE)], description="simulator cross-check")(_build)
