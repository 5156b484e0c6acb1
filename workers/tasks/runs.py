"""Run bookkeeping task ``mesh.run.finished``: appended by the starter to runs that end
in a group or a chord, or in a task that is not a mesh task (a run ending in a mesh
task is ended by that task's own step record). Its task id ``<run_id>:finished`` makes
it the run's last step: the task wrapper's step record ends the run as succeeded
(``mesh.runs``); the function itself has nothing left to do."""

from __future__ import annotations

from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.runs import FINISHED_TASK
from worker_mesh.workers.kinds import STANDARD, task


@task(FINISHED_TASK, kind=STANDARD, resource=Resource.CPU, memo=False)
def run_finished(rt: Any, meta: dict[str, Any], started_at: float) -> bool:
    """Reached only when every step of the run succeeded."""
    return True
