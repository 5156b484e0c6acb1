"""The benchmarks' probe: an event type, a one-task workflow and the task, loaded into
the dispatcher and worker processes with ``MESH_CELERY_EXTRA_MODULES=["benchmarks.probe"]``.

A type of its own (``bench.ping``) so that no real workflow in ``chains/`` is started
by benchmark traffic, and the dispatcher's runs and the ``apply_async`` baseline send
exactly the same task. The task records when it started (``time.time()``, its first
statement), which is what the latency benchmark measures.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.catalog import CATALOG, Id
from worker_mesh.workers.kinds import STANDARD, task

PING_TYPE = "bench.ping"
WORKFLOW = "bench-ping"
TASK = "mesh.bench.ping"


class BenchPing(Event):
    """A probe event; ``seq`` orders them within a run of a benchmark."""

    event_type = PING_TYPE
    entity_kind = "bench"
    entity_field = "ping_id"

    ping_id: Id
    seq: int = Field(default=0, ge=0)


if PING_TYPE not in CATALOG.names():
    CATALOG.register(BenchPing)


def started_key(prefix_ns: Any) -> str:
    """List of ``<event id> <start time>`` written by the task (``keys.ns(...)``)."""
    return str(prefix_ns("bench", "started"))


@task(TASK, kind=STANDARD)
def ping(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> None:
    started = time.time()
    rt.redis.rpush(started_key(rt.keys.ns), f"{event['event_id']} {started:.6f}")


def _build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    return ctx.sig(TASK, ctx.meta, {"event_id": env.event_id, "key": env.entity_key})


if WORKFLOW not in REGISTRY.workflows:
    REGISTRY.workflow(WORKFLOW, on=[On(PING_TYPE)], description="benchmark probe")(_build)
