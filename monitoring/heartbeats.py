"""Dispatcher heartbeats: which dispatchers are alive, for ``mesh status`` and the
exporter's ``mesh_dispatchers_alive``.

Why not the consumer group: a killed dispatcher stays a consumer of the group forever
(removing it would drop its pending entries), and what ``XINFO CONSUMERS`` says about
activity depends on the Redis version (7.2's ``inactive`` counts only reads that
returned entries, so a healthy dispatcher on a quiet stream looks dead). A heartbeat
that expires needs neither: each dispatcher process scores its name with the current
time in one sorted set every ``monitoring.heartbeat_s``; a name whose score is older
than ``monitoring.worker_dead_after_s`` is not alive, one older than a day is removed.
A clean shutdown removes its own name at once.

A dispatcher whose process lives but whose loop hangs keeps beating; that failure shows
as growing lag or pending entries (``MeshConsumerLagGrowing``, ``MeshPendingGrowing``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

FORGET_AFTER_S = 86_400
"""Heartbeats silent this long are removed (the process is not coming back)."""


def dispatchers_key(keys: Any) -> str:
    """Sorted set: dispatcher consumer name -> Unix time of its last heartbeat."""
    return str(keys.ns("mon", "dispatchers"))


def beat(client: Any, keys: Any, name: str, now: float | None = None) -> None:
    client.zadd(dispatchers_key(keys), {name: time.time() if now is None else now})


def alive(client: Any, keys: Any, now: float, dead_after_s: float) -> tuple[int, int]:
    """(alive, known) dispatchers; forgets heartbeats older than ``FORGET_AFTER_S``."""
    key = dispatchers_key(keys)
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now - FORGET_AFTER_S)
    pipe.zcount(key, now - dead_after_s, "+inf")
    pipe.zcard(key)
    _, n_alive, n_known = pipe.execute()
    return int(n_alive), int(n_known)


class Heartbeat:
    """A daemon thread beating for ``name`` until ``stop()``, which removes the name."""

    def __init__(self, client: Any, keys: Any, name: str, interval_s: float) -> None:
        self._client, self._keys, self.name = client, keys, name
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mesh-dispatcher-heartbeat",
                                        daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                beat(self._client, self._keys, self.name)
            except Exception as exc:  # Redis down: the dispatcher's own loop reports it
                log.debug("dispatcher heartbeat failed: %s", exc)
            self._stop.wait(self._interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._client.zrem(dispatchers_key(self._keys), self.name)
        except Exception as exc:
            log.debug("dispatcher heartbeat removal failed: %s", exc)
