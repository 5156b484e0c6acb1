"""Test-only steps for the fusion and batching tests, loaded into real workers with
``MESH_CELERY_EXTRA_MODULES=["tests.throughput.probe"]``.

Each step appends what it saw to a Redis list: its name and the result it was handed
(which messages were delivered is read from the worker's log). ``mesh.tput.double`` is
a batched step that logs each call's items and fails the item ``poison`` alone."""

from __future__ import annotations

import json
from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import TransientError
from worker_mesh.workers.batched import BatchPolicy, Call, batched_task
from worker_mesh.workers.kinds import CRITICAL, STANDARD, task


def _log(rt: Any, name: str, prev: Any) -> None:
    rt.redis.rpush(rt.keys.ns("tput", "log"), json.dumps({"step": name, "prev": prev}))


@task("mesh.tput.step", kind=STANDARD)
def step(rt: Any, prev: Any, name: str) -> list[str]:
    _log(rt, name, prev)
    return [*(prev or []), name]


@task("mesh.tput.flaky", kind=STANDARD)
def flaky(rt: Any, prev: Any, name: str) -> list[str]:
    """Fails once (transient) per name, then succeeds."""
    _log(rt, name, prev)
    if rt.redis.set(rt.keys.ns("tput", "flaked", name), 1, nx=True):
        raise TransientError("flaky once", delay_s=0.2)
    return [*(prev or []), name]


@task("mesh.tput.io_step", kind=STANDARD, resource=Resource.IO)
def io_step(rt: Any, prev: Any, name: str) -> list[str]:
    _log(rt, name, prev)
    return [*(prev or []), name]


@batched_task("mesh.tput.double", kind=CRITICAL, batch=BatchPolicy(max_items=8, max_wait_ms=300))
def double(rt: Any, calls: list[Call]) -> list[Any]:
    items = [c.args[0] for c in calls]
    rt.redis.rpush(rt.keys.ns("tput", "batches"), json.dumps(items))
    return [ValueError("poisoned item") if x == "poison" else x * 2 for x in items]
