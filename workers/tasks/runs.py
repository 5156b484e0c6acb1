"""Run bookkeeping task ``mesh.run.finished``: appended by the starter to runs that end
in a group or a chord (a run ending in a plain task records its success in that task,
``workers.kinds``), and the fallback when that inline record fails. Retries are counted
from Celery's ``task_retry`` signal."""

from __future__ import annotations

from typing import Any

from gpu_pool.routing import Resource
from workers.kinds import FINISHED_TASK, STANDARD, task
from workers.runstats import record_success


@task(FINISHED_TASK, kind=STANDARD, resource=Resource.CPU)
def run_finished(rt: Any, meta: dict[str, Any], started_at: float) -> bool:
    """Reached only when every step of the run succeeded."""
    return record_success(rt.redis, rt.keys, meta, started_at)
