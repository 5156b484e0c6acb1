"""Bookkeeping of the batch rescoring: what the chord's callback and its error handler
record, so an operator (and ``mesh models rescores``) sees every run's outcome.

``<p>:churn:rescore:runs`` is a hash run id -> JSON {status, shards, counts, error...}.
"""

from __future__ import annotations

import json
import time
from typing import Any

from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.monitoring import metrics


def runs_key(rt: Any) -> str:
    return rt.keys.ns("churn", "rescore", "runs")  # type: ignore[no-any-return]


def record(rt: Any, run_id: str, doc: dict[str, Any]) -> None:
    with translate_errors("rescore bookkeeping"):
        rt.redis.hset(runs_key(rt), run_id, json.dumps({"at": time.time(), **doc}, default=str))


def finished(rt: Any, shard_results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The chord body: every shard succeeded."""
    totals: dict[str, Any] = {"shards": len(shard_results)}
    for part in shard_results:
        for k in ("customers", "written", "duplicate", "stale", "high_risk_published",
                  "unreadable"):
            totals[k] = totals.get(k, 0) + int(part.get(k, 0))
    versions = sorted({p["model_version"] for p in shard_results if p.get("model_version")})
    doc = {"status": "succeeded", **totals, "model_versions": versions}
    record(rt, meta["run_id"], doc)
    return doc


def failed(rt: Any, *args: Any) -> dict[str, Any]:
    """The chord's error handler (``link_error``): a shard failed for good.

    Celery calls a chord's errbacks in one of two conventions depending on the task's
    signature: ``(request, exc, traceback, *partial_args)`` or ``(task_id, *partial_args)``.
    Both are accepted here; what is recorded is the run (from ``meta``), the failed
    task's id and the error."""
    meta = next((a for a in args if isinstance(a, dict) and "run_id" in a), {})
    exc = next((a for a in args if isinstance(a, BaseException)), None)
    request = args[0] if args and hasattr(args[0], "id") else None
    task_id = getattr(request, "id", None) or next((a for a in args if isinstance(a, str)), None)
    if exc is None and task_id and getattr(rt, "app", None) is not None:
        exc = _stored_error(rt.app, task_id)
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "a shard failed"
    doc = {"status": "failed", "error": error[:500], "task_id": task_id}
    record(rt, meta.get("run_id", "unknown"), doc)
    metrics.workflow_run(meta.get("workflow", "churn-rescore"), "failed")
    return doc


def _stored_error(app: Any, task_id: str) -> BaseException | None:
    """The failed task's exception, from the result backend (old-style errbacks get
    only the task id)."""
    try:
        result = app.backend.get_task_meta(task_id).get("result")
    except Exception:  # bookkeeping must not fail because the backend hiccups
        return None
    return result if isinstance(result, BaseException) else None


def get(rt: Any, run_id: str) -> dict[str, Any] | None:
    with translate_errors("rescore bookkeeping"):
        raw = rt.redis.hget(runs_key(rt), run_id)
    return json.loads(raw) if raw else None
