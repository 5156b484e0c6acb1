"""Retraining tasks: thin wrappers around ``workers.churn.lifecycle``.

Training is the TRAINING kind (few retries, minutes apart: it is long and a quick retry
of a failure is unlikely to help); the scheduled request is STANDARD.
"""

from __future__ import annotations

from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.churn import lifecycle
from worker_mesh.workers.kinds import STANDARD, TRAINING, task


@task("mesh.retrain.churn", kind=TRAINING, resource=Resource.CPU)
def retrain_churn(rt: Any, meta: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """Train a churn candidate, evaluate it against the promoted model on the same
    held-out set, promote it only if it is not worse."""
    return lifecycle.retrain(rt, meta, request)


@task("mesh.retrain.request", kind=STANDARD, resource=Resource.CPU)
def request_retrain(rt: Any) -> str:
    """Beat: publish the scheduled ``model.retrain_requested`` event."""
    return lifecycle.scheduled_request(rt)
