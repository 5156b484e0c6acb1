"""Test-only tasks for the observability tests (loaded into real workers through
``MESH_CELERY_EXTRA_MODULES``): they drive the metrics facade the way the GPU pool,
the churn model and a failing task do, and record which pool process ran them."""

from __future__ import annotations

import os
import time
from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.monitoring import metrics
from worker_mesh.workers.flowctl import FlowTask, flow_control
from worker_mesh.workers.kinds import CRITICAL, STANDARD, task


@task("mesh.test.mon.pid", kind=STANDARD)
def which_process(rt: Any, meta: dict[str, Any], n: int) -> int:
    """Long enough (50 ms) that both processes of a 2-process pool get work."""
    time.sleep(0.05)
    rt.redis.rpush(rt.keys.ns("test", "mon", "pids"), os.getpid())
    return n


@task("mesh.test.mon.gpu", kind=STANDARD, resource=Resource.GPU)
def gpu_work(rt: Any, meta: dict[str, Any]) -> None:
    metrics.gpu_batch(8, 0.012, "embed")
    metrics.gpu_seconds(0.2, "embed")
    metrics.model_in_use("churn", "v3")
    metrics.result_updated("churn", "customer:1", time.time() - 100)


@task("mesh.test.mon.fail", kind=CRITICAL)
def always_fails(rt: Any, meta: dict[str, Any]) -> None:
    raise PermanentError("bad input")


@task("mesh.test.mon.flow", kind=STANDARD, base=FlowTask)
def flow_work(rt: Any, meta: dict[str, Any], n: int) -> int:
    """Calls a rate-limited resource (``probe-llm``: 2 per 2 s): the third waits its
    turn (rescheduled), and the first one's "429" pauses the resource briefly."""
    fc = flow_control(rt)
    permit = fc.permit("probe-llm", ticket=f"flow-{n}", tokens=50)
    fc.observer.tokens("probe-llm", 50, 20)
    permit.reconcile(20)
    if n == 0:
        fc.pause("probe-llm", 0.5)
    rt.redis.rpush(rt.keys.ns("test", "mon", "flow"), n)
    return n
