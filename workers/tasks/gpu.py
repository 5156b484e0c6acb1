"""GPU tasks: micro-batched embedding, and the off-peak releaser's beat task.

``mesh.gpu.embed`` (urgent, queue ``gpu``) and ``mesh.gpu.embed_bulk`` (bulk, queue
``gpu-batch``, may be held for the off-peak window) take ONE item: a text, or a dict
``{"text": ..., <any other keys>}``; they return ``{"vector": [...], "dim": n, "model":
<version>, <the other keys>}`` so the next task of the item's chain (an upsert) gets the
chunk's identity with its vector. Inside a GPU worker (``mesh worker -Q gpu,gpu-batch
--pool threads -c <2 x max_batch>``) concurrent items are gathered into one forward
pass by ``gpu_pool.batching.MicroBatcher`` (see there for failure handling).

``run_batched(rt, task_type, fn, item)`` is the reusable part: any task type (churn rows)
gets micro-batching, busy tracking for the autoscaler and GPU-seconds accounting by
calling it with its own batch function.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from worker_mesh.gpu_pool import cost
from worker_mesh.gpu_pool.batching import BatchReport, MicroBatcher
from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.monitoring import metrics
from worker_mesh.workers.kinds import INFERENCE, STANDARD, task
from worker_mesh.workers.schedule import SCHEDULE_BUILDERS

log = logging.getLogger(__name__)

def _on_batch(rt: Any) -> Callable[[BatchReport], None]:
    windows = Windows.parse(rt.settings.gpu.offpeak_windows)

    def hook(rep: BatchReport) -> None:
        log.debug("batch %s size=%d wait=%.3fs run=%.3fs", rep.task_type, rep.size, rep.wait_s,
                  rep.run_s)
        metrics.gpu_batch(rep.size, rep.wait_s, rep.task_type)
        metrics.gpu_seconds(rep.run_s, rep.task_type)
        offpeak = windows.is_open(datetime.now(UTC))
        share = rep.run_s / max(rep.size, 1)
        deferred = sum(1 for t in rep.tags if t == "deferred")
        try:
            if deferred:
                cost.record(rt.redis, rt.keys, rep.task_type, share * deferred,
                            offpeak=offpeak, deferred=True)
            if rep.size - deferred:
                cost.record(rt.redis, rt.keys, rep.task_type, share * (rep.size - deferred),
                            offpeak=offpeak, deferred=False)
        except Exception:  # accounting never fails a batch
            log.warning("could not record GPU-seconds", exc_info=True)

    return hook


def batcher_for(rt: Any, task_type: str, fn: Callable[[list[Any]], Sequence[Any]]) -> MicroBatcher:
    """The process's batcher for ``task_type`` (created once, limits from settings). In a
    worker it knows how many task threads can wait on it, so a batch that holds all of
    them runs at once (a solo worker never waits out ``max_wait_ms``)."""
    from worker_mesh.workers.batched import pool_callers

    def make(rt_: Any) -> MicroBatcher:
        lim = rt_.settings.gpu.limits(task_type)
        return MicroBatcher(task_type, fn, max_batch=lim.max_batch, max_wait_ms=lim.max_wait_ms,
                            retries=rt_.settings.gpu.batch_retries, on_batch=_on_batch(rt_),
                            max_callers=pool_callers())

    return rt.service(f"gpu.batcher.{task_type}", make)


def _was_deferred() -> bool:
    from celery import current_task

    req = getattr(current_task, "request", None)
    return bool(getattr(req, "mesh_deferred", 0)) if req is not None else False


class BusyTracker:
    """Whether this worker host has GPU tasks in progress, for the autoscaler.

    Counted in-process; Redis is written only when the count goes 0 -> 1 or back to 0
    (and refreshed at most every ``refresh_s`` while busy), so a batch of 64 items costs
    two writes, not 128.
    """

    def __init__(self, rt: Any, refresh_s: float = 60.0) -> None:
        self.r, self.keys = rt.redis, rt.keys
        self.host = socket.gethostname()
        self.refresh_s = refresh_s
        self._n = 0
        self._written = 0.0
        self._lock = threading.Lock()

    def _write(self, busy: bool) -> None:
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.keys.gpu_busy(), self.host, int(busy))
        pipe.hset(self.keys.gpu_busy_seen(), self.host, now)
        pipe.execute()
        self._written = now

    def __enter__(self) -> BusyTracker:
        with self._lock:
            self._n += 1
            if self._n == 1 or time.time() - self._written > self.refresh_s:
                self._write(True)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._n -= 1
            if self._n == 0:
                self._write(False)


def run_batched(rt: Any, task_type: str, fn: Callable[[list[Any]], Sequence[Any]],
                item: Any) -> Any:
    """Hand ``item`` to the micro-batcher and return its own result. While waiting, the
    worker host counts as busy (the autoscaler never removes it)."""
    return run_batched_many(rt, task_type, fn, [item])[0]


def run_batched_many(rt: Any, task_type: str, fn: Callable[[list[Any]], Sequence[Any]],
                     items: Sequence[Any]) -> list[Any]:
    """Hand several items (a document's chunks) to the micro-batcher together: they
    share passes with the items of other tasks of this process."""
    tag = "deferred" if _was_deferred() else "direct"
    with rt.service("gpu.busy", BusyTracker):
        return batcher_for(rt, task_type, fn).map(
            items, timeout_s=rt.settings.celery.task_soft_time_limit_s, tag=tag)


def embed_many(rt: Any, texts: Sequence[str]) -> np.ndarray:
    """Vectors of ``texts`` (rows, L2-normalised) through the process's ``embed``
    micro-batcher: the path of every embedding a worker makes (``mesh.gpu.embed``, the
    re-embedding workflow), so the GPU dashboard's batch panels see all of them."""
    from worker_mesh.workers.embedding.model import embed_texts, get_model

    model = get_model(rt)
    if not texts:
        return np.zeros((0, model.dim), dtype=np.float32)

    def forward(batch: list[str]) -> list[np.ndarray]:
        return list(embed_texts(model, batch))

    return np.vstack(run_batched_many(rt, "embed", forward, list(texts)))


def _embed_item(item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"], {k: v for k, v in item.items() if k != "text"}
    raise PermanentError(f"embed: expected a text or {{'text': str, ...}}, got {type(item).__name__}")


def embed_one(rt: Any, item: Any) -> dict[str, Any]:
    """Embed one text (micro-batched with its neighbours in this process)."""
    text, rest = _embed_item(item)

    from worker_mesh.workers.embedding.model import get_model

    model = get_model(rt)  # once per process, shared with the re-embedding tasks
    vector = embed_many(rt, [text])[0].tolist()
    return rest | {"vector": vector, "dim": len(vector), "model": model.version}


@task("mesh.gpu.embed", kind=INFERENCE, resource=Resource.GPU)
def embed(rt: Any, item: Any) -> dict[str, Any]:
    """Urgent: embed one changed chunk now (queue ``gpu``)."""
    return embed_one(rt, item)


@task("mesh.gpu.embed_bulk", kind=INFERENCE, resource=Resource.GPU_BULK)
def embed_bulk(rt: Any, item: Any) -> dict[str, Any]:
    """Bulk: embed one chunk of a re-embed-all (queue ``gpu-batch``; may be held)."""
    return embed_one(rt, item)


@task("mesh.gpu.release_due", kind=STANDARD, resource=Resource.CPU)
def release_due(rt: Any) -> int:
    """Beat's releaser tick: release held work whose window or deadline has come."""
    from worker_mesh.gpu_pool.deferral import CelerySender, Deferral

    d = Deferral(rt.redis, rt.keys, rt.settings.gpu, CelerySender(rt.app))
    return d.release_due(datetime.now(UTC))


def _beat_entry(settings: Any) -> dict[str, Any]:
    return {"task": "mesh.gpu.release_due", "schedule": settings.gpu.release_interval_s,
            "options": {"expires": settings.gpu.release_interval_s}}


SCHEDULE_BUILDERS["gpu-release-due"] = _beat_entry
