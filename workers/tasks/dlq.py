"""``mesh.dlq.workflow_failed``: the error callback of every workflow run.

Celery calls it (as a task, with the failed task's id first) when a task of the run
finally fails, after its retries. It ends the run as failed in the run ledger and
dead-letters the event that started it (reason ``workflow_failed``, naming the step,
the task and the error), exactly once per run, so it can be replayed after a fix.

A step that gave up because Redis or the broker was unreachable
(``INFRASTRUCTURE_ERRORS``) does not fail its run either: the re-driver resumes it.
An error raised *after* a step's function returned (the result backend or the broker
failing while Celery stores the result) also reaches this callback; the ledger knows
the step succeeded (its result is memoized), so the run is not failed: it goes on, or
is re-driven from its next step.
"""

from __future__ import annotations

import logging
from typing import Any

from worker_mesh.events.dlq import DeadLetters
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.runs import split_task_id
from worker_mesh.monitoring import metrics
from worker_mesh.workers.kinds import STANDARD, task

log = logging.getLogger("mesh.dlq")

FAILED_SOURCE = "mesh.dlq.workflow_failed"
INFRASTRUCTURE_ERRORS = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError",
                                   "OperationalError", "BrokerUnavailable"})
"""A step that ran out of retries because the mesh's own Redis or broker was down has
not failed: its run stays in flight and the re-driver resumes it once they are back
(after ``runs.redrive_max`` fruitless re-drives it is dead-lettered as ``stuck``)."""


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


@task("mesh.dlq.workflow_failed", kind=STANDARD, resource=Resource.CPU, ledger=False)
def workflow_failed(rt: Any, failed_task_id: str, meta: dict[str, Any], fields: dict[str, str],
                    started_at: float) -> str | None:
    """Fail the run and dead-letter its event (first failure of the run only); returns
    the dead letter's id."""
    run_id, workflow = meta["run_id"], meta["workflow"]
    ids = split_task_id(failed_task_id)
    step = ids[1] if ids else "?"
    ledger = rt.ledger
    if ids is not None and step in ledger.memo_steps(run_id):
        log.warning("step %s of run %s succeeded but Celery reported an error after it "
                    "(result backend or broker); the run goes on", step, run_id)
        return None
    name, error = failure_of(rt.app, failed_task_id)
    if error.split(":", 1)[0] in INFRASTRUCTURE_ERRORS:
        log.warning("step %s of run %s gave up on an unreachable Redis/broker (%s); the run "
                    "stays in flight for the re-driver", step, run_id, error.split(":", 1)[0])
        return None
    reason = f"workflow {workflow} (run {run_id}) failed at step {step} (task {name})"
    if not ledger.fail_once(run_id, f"{reason}: {error}"[:2000], claimer=failed_task_id):
        return None
    dlq_id = DeadLetters(rt.redis, rt.keys, rt.settings.streams).add(
        "workflow_failed", reason, fields, source=FAILED_SOURCE, error=error, workflow=workflow,
        run_id=run_id, step=step)
    ledger.dead_lettered(run_id, dlq_id)
    metrics.workflow_run(workflow, "failed")
    return dlq_id
