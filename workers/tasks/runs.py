"""Run bookkeeping tasks: the last link of every workflow canvas records its success
(freshness, duration); retries are counted from Celery's ``task_retry`` signal."""

from __future__ import annotations

from typing import Any

from gpu_pool.routing import Resource
from monitoring import metrics
from workers.kinds import STANDARD, task
from workers.runstats import RunStats


@task("mesh.run.finished", kind=STANDARD, resource=Resource.CPU)
def run_finished(rt: Any, meta: dict[str, Any], started_at: float) -> bool:
    """Appended to every run by the starter: reached only when every step succeeded."""
    first = RunStats(rt.redis, rt.keys).finished(meta["workflow"], meta["run_id"], started_at, ok=True)
    if first:
        metrics.workflow_run(meta["workflow"], "succeeded")
    return first
