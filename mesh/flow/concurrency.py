"""Concurrency keys: at most N steps running at once per key (one content run per
customer, two trainings at once), shared by every worker through Redis.

A slot is a *lease* held by the step's id with an expiry. It is released when the step
ends in any way (success, failure, retry, throttle: ``Lease.release`` in a ``finally``)
and renewed every third of ``flow.lease_s`` while the step runs; a worker that dies
(SIGKILL, lost node) stops renewing, so its slot frees itself at most ``lease_s``
later. A redelivered step has the same id and takes its own slot back at once.

Steps that find every slot taken wait in line (first come, first served) and are told
when to ask again: the average hold time times their place in line, or the expiry of
the oldest lease if sooner.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker_mesh.mesh.flow import lua
from worker_mesh.mesh.flow.limits import Wait, tag_for
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings.flow import FlowSettings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
ACTIVE_TTL_S = 86_400


def safe_key(key: str) -> str:
    """The key as it appears in Redis names: itself when short and plain, else a hash
    (braces would break the hash tag; long keys bloat every name)."""
    if _SAFE_KEY.match(key):
        return key
    return "h" + hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass
class Lease:
    """One held slot; ``release`` it once (idempotent). ``keepalive`` renews it from a
    daemon thread until released."""

    name: str
    key: str
    holder: str
    waited_s: float
    _owner: ConcurrencyLimiter | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    released: bool = False

    def keepalive(self, every_s: float) -> None:
        if self._owner is None:
            return
        owner = self._owner

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    if not owner.renew(self):
                        log.warning("lease %s/%s of step %s expired while running",
                                    self.name, self.key, self.holder)
                        return
                except Exception:
                    log.debug("lease renewal failed", exc_info=True)

        threading.Thread(target=loop, name=f"lease-{self.name}", daemon=True).start()

    def release(self) -> None:
        self._stop.set()
        if self._owner is not None and not self.released:
            self._owner.release(self)
        self.released = True


class ConcurrencyLimiter:
    def __init__(self, client: redis.Redis, keys: Keys, settings: FlowSettings) -> None:
        self._r = client
        self._keys = keys
        self._s = settings
        self._acquire = client.register_script(lua.LEASE_ACQUIRE)
        self._release = client.register_script(lua.LEASE_RELEASE)
        self._renew = client.register_script(lua.LEASE_RENEW)
        self._status = client.register_script(lua.LEASE_STATUS)

    def limit(self, name: str, override: int | None = None) -> int | None:
        return override if override is not None else self._s.concurrency.get(name)

    def _k(self, name: str, key: str, *parts: str) -> list[str]:
        tag = tag_for(self._keys, "flowc", f"{name}:{safe_key(key)}")
        return [f"{tag}:{p}" for p in parts]

    def active_key(self, name: str) -> str:
        """Sorted set: keys of ``name`` -> last time a step asked (for ``mesh status``)."""
        return self._keys.ns("flowc", name, "active")

    def acquire(self, name: str, key: str, holder: str, *, limit: int | None = None,
                now: float | None = None) -> Lease | Wait:
        """A slot for ``holder`` (the step id) under ``name``/``key``, or how long to wait."""
        n = self.limit(name, limit)
        if n is None:
            return Lease(name, key, holder, 0.0)
        keys = self._k(name, key, "holders", "queue", "deadline", "state")
        args: list[str | int | float] = ["" if now is None else repr(now), holder, n, self._s.lease_s,
                self._s.ticket_grace_s, self._s.min_wait_s, 1.0]
        with translate_errors(f"concurrency {name}"):
            ok, a, ahead, b = self._acquire(keys=keys, args=args)
            self._r.zadd(self.active_key(name), {key: float(now or 0) or _time()})
        if int(ok):
            return Lease(name, key, holder, float(a), self)
        return Wait(float(a), f"{name}:{key}", int(ahead), float(b))

    def release(self, lease: Lease, now: float | None = None) -> bool:
        with translate_errors(f"concurrency {lease.name}"):
            out = self._release(keys=self._k(lease.name, lease.key, "holders", "state"),
                                args=["" if now is None else repr(now), lease.holder,
                                      self._s.usage_ewma_alpha])
        return bool(int(out))

    def renew(self, lease: Lease, now: float | None = None) -> bool:
        with translate_errors(f"concurrency {lease.name}"):
            out = self._renew(keys=self._k(lease.name, lease.key, "holders"),
                              args=["" if now is None else repr(now), lease.holder,
                                    self._s.lease_s])
        return bool(int(out))

    def status(self, name: str, now: float | None = None) -> dict[str, object]:
        """Running and waiting steps over the keys of ``name`` seen in the last day."""
        t = _time() if now is None else now
        with translate_errors(f"concurrency {name}"):
            self._r.zremrangebyscore(self.active_key(name), "-inf", t - ACTIVE_TTL_S)
            keys = [k.decode() if isinstance(k, bytes) else str(k)
                    for k in self._r.zrange(self.active_key(name), 0, -1)]
            running = waiting = busy = 0
            oldest = 0.0
            for key in keys:
                ts, held, queued, first = self._status(
                    keys=self._k(name, key, "holders", "queue", "deadline", "state"),
                    args=["" if now is None else repr(now)])
                running += int(held)
                waiting += int(queued)
                busy += int(int(held) > 0)
                if first:
                    oldest = max(oldest, float(ts) - float(first))
        return {"name": name, "limit_per_key": self.limit(name) or 0, "keys_seen": len(keys),
                "keys_busy": busy, "running": running, "waiting": waiting,
                "oldest_wait_s": round(oldest, 3)}


def _time() -> float:
    import time

    return time.time()
