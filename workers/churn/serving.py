"""Scoring always uses the promoted model: cached per process, reloaded when the
pointer changes.

Each scoring call reads the pointer (one small HGETALL, the cost of a round trip) and
compares it with the cached one; the artifact is fetched and parsed only when the
promoted version or its promotion number changed. A rollback (``mesh models promote``)
therefore takes effect on the next score in every worker, without restarts.
"""

from __future__ import annotations

import threading

from worker_mesh.mesh.errors import NotFound
from worker_mesh.monitoring import metrics
from worker_mesh.workers.churn.model import ChurnModel
from worker_mesh.workers.churn.registry import ModelRegistry, Pointer


class PromotedModel:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._cached: tuple[Pointer, ChurnModel] | None = None
        self._lock = threading.Lock()
        self.loads = 0
        """How many times an artifact was loaded (tests check the cache)."""

    def get(self, ptr: Pointer | None = None) -> tuple[Pointer, ChurnModel]:
        """The promoted model; ``ptr`` when the caller has just read the pointer itself."""
        ptr = ptr or self.registry.promoted()
        if ptr is None:
            raise NotFound(f"no {self.registry.name} model is promoted yet: run `mesh train`")
        with self._lock:
            cached = self._cached
            if cached is not None and (cached[0].version, cached[0].seq) == (ptr.version, ptr.seq):
                return cached
            model = self.registry.load(ptr.version)
            self._cached = (ptr, model)
            self.loads += 1
        metrics.model_in_use(self.registry.name, ptr.version)
        return ptr, model
