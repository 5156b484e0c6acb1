"""The per-process runtime: clients, stores and models a task needs, built once per
worker process from the app's settings and handed to task functions explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings

if TYPE_CHECKING:
    from celery import Celery

    from worker_mesh.events.publisher import Publisher

T = TypeVar("T")


class Runtime:
    """Lazily built, cached per process. ``service(name, factory)`` holds anything
    expensive (a loaded model, a store) so it is built once per worker process."""

    def __init__(self, settings: MeshSettings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app
        self.keys = Keys(settings.redis.key_prefix)
        self._services: dict[str, Any] = {}
        self._lock = threading.Lock()

    @cached_property
    def redis(self) -> redis.Redis:
        return make_client(self.settings.redis)

    @cached_property
    def ledger(self) -> RunLedger:
        """The run lifecycle (``mesh.runs``): every step reports to it."""
        return RunLedger(self.redis, self.keys, self.settings.runs)

    @cached_property
    def publisher(self) -> Publisher:
        from worker_mesh.events.publisher import Publisher

        return Publisher(self.redis, self.settings.streams, self.keys)

    def service(self, name: str, factory: Callable[[Runtime], T]) -> T:
        with self._lock:
            if name not in self._services:
                self._services[name] = factory(self)
            return self._services[name]  # type: ignore[no-any-return]


_runtimes: dict[int, Runtime] = {}
_rt_lock = threading.Lock()


def runtime_for(app: Celery) -> Runtime:
    with _rt_lock:
        rt = _runtimes.get(id(app))
        if rt is None:
            rt = Runtime(app.mesh_settings, app)  # type: ignore[attr-defined]
            _runtimes[id(app)] = rt
        return rt
