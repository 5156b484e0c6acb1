"""Churn tasks: thin wrappers around ``workers.churn.scoring`` and ``workers.churn.rescore``.

Kinds: scoring is INFERENCE (a model call: few quick retries) and batched (one
``predict`` for the items of concurrent runs, ``workers.batched``); merging and storing are
STANDARD; the per-shard rescoring is INFERENCE on the GPU-bulk class (``gpu-batch``
queue), so it runs when bulk capacity is cheap. A missing promoted model or a corrupt
profile raises a PermanentError: the run fails fast instead of retrying.
"""

from __future__ import annotations

from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.workers.batched import BatchPolicy, Call, batched_task
from worker_mesh.workers.churn import rescore, scoring
from worker_mesh.workers.kinds import INFERENCE, STANDARD, task


@task("mesh.churn.merge_profile", kind=STANDARD, resource=Resource.CPU)
def merge_profile(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Merge a customer.created/updated/activity event into the customer's profile."""
    return scoring.merge(rt, meta, event)


@batched_task("mesh.churn.score", kind=INFERENCE, resource=Resource.CPU,
              batch=BatchPolicy(max_items=64, max_wait_ms=10))
def score(rt: Any, calls: list[Call]) -> list[dict[str, Any] | BaseException]:
    """Features of the stored profiles -> churn probabilities (promoted model): the
    items of concurrent runs are scored with one ``predict`` on a feature matrix."""
    return scoring.score_many(rt, [_score_args(c) for c in calls])


def _score_args(c: Call) -> tuple[dict[str, Any], dict[str, Any]]:
    merged = c.args[0] if c.args else c.kwargs.get("merged")
    meta = c.args[1] if len(c.args) > 1 else c.kwargs.get("meta", {})
    if not isinstance(merged, dict) or "customer_id" not in merged:
        raise PermanentError("churn score: expected the merge step's result "
                             "({customer_id, profile_revision, ...})")
    return merged, meta


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
