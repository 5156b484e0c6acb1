"""Churn tasks: thin wrappers around ``workers.churn.scoring`` and ``workers.churn.rescore``.

Kinds: scoring is INFERENCE (a model call: few quick retries); merging and storing are
STANDARD; the per-shard rescoring is INFERENCE on the GPU-bulk class (``gpu-batch``
queue), so it runs when bulk capacity is cheap. A missing promoted model or a corrupt
profile raises a PermanentError: the run fails fast instead of retrying.
"""

from __future__ import annotations

from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.churn import rescore, scoring
from worker_mesh.workers.kinds import INFERENCE, STANDARD, task


@task("mesh.churn.merge_profile", kind=STANDARD, resource=Resource.CPU)
def merge_profile(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Merge a customer.created/updated/activity event into the customer's profile."""
    return scoring.merge(rt, meta, event)


@task("mesh.churn.score", kind=INFERENCE, resource=Resource.CPU)
def score(rt: Any, merged: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Features of the stored profile -> churn probability (promoted model)."""
    return scoring.score(rt, merged, meta)


@task("mesh.churn.store", kind=STANDARD, resource=Resource.CPU)
def store(rt: Any, scored: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Latest score per customer; ``churn.high_risk`` when it crossed the threshold."""
    return scoring.store(rt, scored, meta)


@task("mesh.churn.rescore_shard", kind=INFERENCE, resource=Resource.GPU_BULK)
def rescore_shard(rt: Any, meta: dict[str, Any], lo: str, hi: str | None,
                  event_id: str) -> dict[str, Any]:
    """Rescore the customers with ids in [lo, hi) (one header part of the chord)."""
    return scoring.rescore_range(rt, meta, lo, hi, event_id)


@task("mesh.churn.rescore_done", kind=STANDARD, resource=Resource.CPU)
def rescore_done(rt: Any, shard_results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The chord body: totals of a rescoring whose every shard succeeded."""
    return rescore.finished(rt, shard_results, meta)


@task("mesh.churn.rescore_failed", kind=STANDARD, resource=Resource.CPU)
def rescore_failed(rt: Any, *args: Any) -> dict[str, Any]:
    """The chord's error handler: records the failed rescoring run."""
    return rescore.failed(rt, *args)
