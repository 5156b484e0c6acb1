"""Test-only tasks exercising the task kinds' retry policies in a real worker.
Loaded with ``MESH_CELERY_EXTRA_MODULES=["tests.support.probe_retry"]``."""

from __future__ import annotations

from typing import Any

from worker_mesh.mesh.errors import NotFound, RateLimited
from worker_mesh.workers.kinds import CRITICAL, TaskKind, task

# Quick delays so the test runs in seconds; same mechanism as API_CALL.
FAST_API = TaskKind("api_call", max_retries=3, backoff_s=0.2, backoff_max_s=1.0)


@task("mesh.probe.flaky", kind=FAST_API)
def flaky(rt: Any, key: str, failures: int, retry_after_s: float) -> int:
    """Raises RateLimited(retry_after_s) ``failures`` times, then succeeds."""
    n = int(rt.redis.incr(key))
    rt.redis.rpush(key + ":times", repr(__import__("time").time()))
    if n <= failures:
        raise RateLimited("slow down", delay_s=retry_after_s)
    return n


@task("mesh.probe.missing", kind=FAST_API)
def missing(rt: Any, key: str) -> None:
    rt.redis.incr(key)
    raise NotFound("customer 404 does not exist")


@task("mesh.probe.critical", kind=CRITICAL)
def critical(rt: Any, key: str) -> None:
    rt.redis.incr(key)
    raise RuntimeError("critical step broke")
