"""The detection benchmark's probe, loaded into its dispatcher, workers and exporter
with ``MESH_CELERY_EXTRA_MODULES=["benchmarks._detect_probe"]``.

One event type (``bench.detect``) of its own, so no built-in workflow runs; its
``target`` field picks one of four workflows, each a one-task run on the queue whose
failure the benchmark injects:

=================  ==========  ===============================================================
workflow           queue       failure switch (a Redis flag the task reads)
=================  ==========  ===============================================================
detect-fresh       cpu         none: the benchmark stops its events to make it stale
detect-failing     cpu         ``detect:fail`` -> PermanentError (the run is dead-lettered)
detect-gpu         gpu         ``detect:stall:gpu`` -> the task waits while the flag is set
detect-bulk        gpu-batch   ``detect:stall:gpu-batch`` -> same (bulk GPU work)
=================  ==========  ===============================================================
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.catalog import CATALOG, Id
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.workers.kinds import STANDARD, task

EVENT_TYPE = "bench.detect"
TARGETS = {"fresh": ("detect-fresh", "mesh.detect.ok"),
           "failing": ("detect-failing", "mesh.detect.maybe_fail"),
           "gpu": ("detect-gpu", "mesh.detect.gpu"),
           "bulk": ("detect-bulk", "mesh.detect.bulk")}
STALL_MAX_S = 480.0
"""A stalled task gives up after this long (under the 10-minute task time limit)."""


class BenchDetect(Event):
    """A probe event; ``target`` names the workflow it starts (see ``TARGETS``)."""

    event_type = EVENT_TYPE
    entity_kind = "bench"
    entity_field = "detect_id"

    detect_id: Id
    target: str = Field(min_length=1, max_length=16)


if EVENT_TYPE not in CATALOG.names():
    CATALOG.register(BenchDetect)


def flag(rt: Any, *parts: str) -> str:
    return str(rt.keys.ns("detect", *parts))


def _stall(rt: Any, queue: str) -> None:
    end = time.monotonic() + STALL_MAX_S
    while rt.redis.exists(flag(rt, "stall", queue)) and time.monotonic() < end:
        time.sleep(0.5)


@task("mesh.detect.ok", kind=STANDARD)
def ok(rt: Any, meta: dict[str, Any]) -> None:
    return None


@task("mesh.detect.maybe_fail", kind=STANDARD)
def maybe_fail(rt: Any, meta: dict[str, Any]) -> None:
    if rt.redis.exists(flag(rt, "fail")):
        raise PermanentError("injected failure (detection benchmark)")


@task("mesh.detect.gpu", kind=STANDARD, resource=Resource.GPU)
def gpu(rt: Any, meta: dict[str, Any]) -> None:
    _stall(rt, "gpu")


@task("mesh.detect.bulk", kind=STANDARD, resource=Resource.GPU_BULK)
def bulk(rt: Any, meta: dict[str, Any]) -> None:
    _stall(rt, "gpu-batch")


def _builder(task_name: str):  # type: ignore[no-untyped-def]
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return ctx.sig(task_name, ctx.meta, step="only")
    return build


def _is(target: str):  # type: ignore[no-untyped-def]
    return lambda env: getattr(env.payload, "target", None) == target


for _target, (_workflow, _task) in TARGETS.items():
    if _workflow not in REGISTRY.workflows:
        REGISTRY.workflow(_workflow, on=[On(EVENT_TYPE, where=_is(_target))],
                          description=f"detection benchmark probe ({_target})")(_builder(_task))
