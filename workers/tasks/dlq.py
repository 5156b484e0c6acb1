"""``mesh.dlq.workflow_failed``: the error callback of every workflow run.

Celery calls it (as a task, with the failed task's id first) when a task of the run
finally fails, after its retries. It dead-letters the event that started the run with
the last error (reason ``workflow_failed``), once per run, so it can be replayed after
a fix, and counts the run as failed.
"""

from __future__ import annotations

from typing import Any

from events.dlq import DeadLetters
from gpu_pool.routing import Resource
from monitoring import metrics
from workers.kinds import STANDARD, task
from workers.runstats import RunStats

MARKER_TTL_S = 7 * 86_400
FAILED_SOURCE = "mesh.dlq.workflow_failed"


def failure_of(app: Any, task_id: str) -> tuple[str, str]:
    """(task name, ``ExcType: message``) of a failed task, from the result backend."""
    res = app.AsyncResult(task_id)
    try:
        exc = res.result
        name = res.name or "?"
    except Exception as err:  # a result we cannot read must not hide the failure
        return "?", f"result unreadable: {type(err).__name__}"
    if isinstance(exc, BaseException):
        return name, f"{type(exc).__name__}: {exc}"
    return name, f"state {res.state}: {str(exc)[:500]}"


@task("mesh.dlq.workflow_failed", kind=STANDARD, resource=Resource.CPU)
def workflow_failed(rt: Any, failed_task_id: str, meta: dict[str, Any], fields: dict[str, str],
                    started_at: float) -> str | None:
    """Dead-letter the run's event (first failure of the run only); returns the DLQ id."""
    run_id, workflow = meta["run_id"], meta["workflow"]
    if not rt.redis.set(rt.keys.ns("dlq", "failed", run_id), failed_task_id, nx=True,
                        ex=MARKER_TTL_S):
        return None
    name, error = failure_of(rt.app, failed_task_id)
    dlq_id = DeadLetters(rt.redis, rt.keys, rt.settings.streams).add(
        "workflow_failed", f"workflow {workflow} (run {run_id}) failed in task {name}",
        fields, source=FAILED_SOURCE, error=error, workflow=workflow)
    if RunStats(rt.redis, rt.keys).finished(workflow, run_id, started_at, ok=False):
        metrics.workflow_run(workflow, "failed")
    return dlq_id
