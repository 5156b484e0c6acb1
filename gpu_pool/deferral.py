"""Off-peak deferral: bulk GPU work submitted outside a window waits in Redis.

``Deferral.submit(sig)`` takes a Celery signature as its JSON dict (``dict(sig)``):

- urgent GPU work (``Resource.GPU``) and non-GPU work are sent at once, never held;
- bulk GPU work (``Resource.GPU_BULK``) is sent at once inside an off-peak window (or
  when deferral is off), else held **durably** in Redis: a hash of items plus a FIFO
  sorted set, and a second sorted set of release-by times for items with a deadline
  (``deadline - deadline_lead_s``), so an item whose deadline comes before the next
  window is released in time to meet it.

``Deferral.release_due(now)`` is the releaser's tick: inside a window everything held is
sent to ``gpu-batch`` in groups of ``group_size`` (the batch size, so a GPU worker gets
full micro-batches); outside, only items whose release-by time has come. ``release_all``
is the operator's ``mesh gpu release``. A group is sent *then* removed, under a lock:
a releaser that dies in between sends that group again after restart (at-least-once;
task ids are deterministic and task writes idempotent, so effects are once).

Time is always a parameter (``now``); the loop (``run_releaser``) takes a clock and a
sleep function, so tests drive hours of schedule in milliseconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.routing import Resource, queue_for, resource_of_task
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings import GpuSettings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Sender(Protocol):
    """Sends signature dicts to Celery. ``deferred`` marks items that were held."""

    def send(self, sigs: Sequence[dict[str, Any]], *, deferred: bool) -> None: ...


class CelerySender:
    """Sends through a Celery app, on one producer (connection) per group. Plain
    signatures released from the held set go to ``gpu-batch``; every sent message
    carries the headers ``mesh_deferred`` and ``mesh_sent_at`` (used for cost)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def send(self, sigs: Sequence[dict[str, Any]], *, deferred: bool) -> None:
        with translate_errors("send GPU work"), self.app.producer_or_acquire() as producer:
            for d in sigs:
                sig = self.app.signature(d)
                opts: dict[str, Any] = {
                    "producer": producer,
                    "headers": {"mesh_deferred": int(deferred), "mesh_sent_at": time.time()},
                }
                if deferred and not d.get("subtask_type"):
                    opts["queue"] = queue_for(Resource.GPU_BULK)
                sig.apply_async(**opts)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def sig_resource(sig: dict[str, Any] | list[Any]) -> Resource | None:
    """The declared resource of a signature dict: a chain's or a group's first task, a
    chord's header (the bulk part; its body is bookkeeping that runs when it is done)."""
    if isinstance(sig, list):
        return sig_resource(sig[0]) if sig else None
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs") or {}
    if kind in ("chain", "group"):
        return sig_resource(kwargs.get("tasks") or [])
    if kind == "chord":
        return sig_resource(kwargs.get("header") or [])
    return resource_of_task(str(sig.get("task", "")))


@dataclass(frozen=True)
class Submitted:
    id: str
    held: bool
    reason: str


@dataclass(frozen=True)
class HeldStatus:
    held: int
    with_deadline: int
    oldest_submitted_at: float | None
    next_deadline_release_at: float | None
    released: dict[str, int]


@dataclass(frozen=True)
class HoldDecision:
    held: bool
    reason: str
    release_at: float | None = None
    """Epoch seconds at which a held item is released early for its deadline (None:
    it waits for the window)."""


def hold_decision(res: Resource | None, gpu: GpuSettings, windows: Windows, now: datetime,
                  deadline: datetime | None = None) -> HoldDecision:
    """Whether work of resource ``res`` submitted at ``now`` is held, and until when.

    Pure (no Redis): ``Deferral.submit`` acts on it, and the cost simulator
    (``gpu_pool.sim``) calls the same function, so the simulated deferral is this one.
    """
    if res is not Resource.GPU_BULK:
        return HoldDecision(False, f"{res or 'unknown'} work is never held")
    if not gpu.deferral_enabled:
        return HoldDecision(False, "deferral disabled")
    if not windows or windows.is_open(now):
        return HoldDecision(False, "window open")
    if deadline is None:
        return HoldDecision(True, "held for window")
    release_at = deadline.timestamp() - gpu.deadline_lead_s
    nxt = windows.next_open(now)
    if nxt is not None and nxt.timestamp() <= release_at:
        return HoldDecision(True, "held for window")  # the window comes first
    if release_at <= now.timestamp():
        return HoldDecision(False, "deadline before next window")
    return HoldDecision(True, "held; released early for its deadline", release_at)


class Deferral:
    def __init__(self, client: redis.Redis, keys: Keys, gpu: GpuSettings, sender: Sender,
                 windows: Windows | None = None) -> None:
        self.r = client
        self.keys = keys
        self.gpu = gpu
        self.sender = sender
        self.windows = windows if windows is not None else Windows.parse(gpu.offpeak_windows)
        self.group_size = gpu.group_size()

    @classmethod
    def for_app(cls, app: Any, client: redis.Redis | None = None) -> Deferral:
        """The deferral of a mesh Celery app (``create_app``), sending through it."""
        from worker_mesh.mesh.redis_conn import make_client

        settings = app.mesh_settings
        return cls(client or make_client(settings.redis), Keys(settings.redis.key_prefix),
                   settings.gpu, CelerySender(app))

    # -- submit ----------------------------------------------------------------------
    def submit(self, sig: dict[str, Any], *, now: datetime, deadline: datetime | None = None,
               resource: Resource | None = None) -> Submitted:
        """Send ``sig`` now or hold it for the next window (see the module docstring)."""
        res = resource or sig_resource(sig)
        item_id = str((sig.get("options") or {}).get("task_id") or uuid.uuid4())
        d = hold_decision(res, self.gpu, self.windows, now, deadline)
        if not d.held:
            self.sender.send([sig], deferred=False)
            return Submitted(item_id, False, d.reason)
        record = json.dumps({"sig": sig, "submitted_at": now.timestamp(),
                             "deadline": deadline.timestamp() if deadline else None})
        with translate_errors("hold GPU work"):
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.keys.gpu_held_items(), item_id, record)
            pipe.zadd(self.keys.gpu_held_order(), {item_id: now.timestamp()}, nx=True)
            if d.release_at is not None:
                pipe.zadd(self.keys.gpu_held_due(), {item_id: d.release_at})
            pipe.execute()
        return Submitted(item_id, True, d.reason)

    # -- release ---------------------------------------------------------------------
    def release_due(self, now: datetime, *, limit: int | None = None) -> int:
        """The releaser's tick. Returns how many items were sent."""
        if self.windows.is_open(now):
            return self._release(self._fifo, "window", limit)
        cutoff = now.timestamp()

        def due(n: int) -> list[str]:
            found: list[Any] = self.r.zrangebyscore(  # type: ignore[assignment]
                self.keys.gpu_held_due(), "-inf", cutoff, start=0, num=n)
            return [_s(m) for m in found]

        return self._release(due, "deadline", limit)

    def release_all(self) -> int:
        """Send everything held now (``mesh gpu release``)."""
        return self._release(self._fifo, "manual", None)

    def _fifo(self, n: int) -> list[str]:
        found: list[Any] = self.r.zrange(self.keys.gpu_held_order(), 0, n - 1)  # type: ignore[assignment]
        return [_s(m) for m in found]

    def _release(self, pick: Callable[[int], list[str]], why: str, limit: int | None) -> int:
        token = uuid.uuid4().hex
        lock = self.keys.gpu_release_lock()
        with translate_errors("release held GPU work"):
            if not self.r.set(lock, token, nx=True, px=60_000):
                log.info("another releaser holds the lock; skipping this tick")
                return 0
            sent = 0
            try:
                while limit is None or sent < limit:
                    n = self.group_size if limit is None else min(self.group_size, limit - sent)
                    ids = pick(n)
                    if not ids:
                        break
                    raw = self.r.hmget(self.keys.gpu_held_items(), ids)
                    sigs = [json.loads(v)["sig"] for v in raw if v is not None]
                    if sigs:
                        self.sender.send(sigs, deferred=True)
                    pipe = self.r.pipeline(transaction=True)
                    pipe.zrem(self.keys.gpu_held_order(), *ids)
                    pipe.zrem(self.keys.gpu_held_due(), *ids)
                    pipe.hdel(self.keys.gpu_held_items(), *ids)
                    pipe.hincrby(self.keys.gpu_released_total(), why, len(sigs))
                    pipe.pexpire(lock, 60_000)
                    pipe.execute()
                    sent += len(sigs)
            finally:
                if self.r.get(lock) in (token, token.encode()):
                    self.r.delete(lock)
        if sent:
            log.info("released %d held GPU item(s) (%s)", sent, why)
        return sent

    # -- look ------------------------------------------------------------------------
    def held_count(self) -> int:
        with translate_errors("count held GPU work"):
            return int(self.r.zcard(self.keys.gpu_held_order()))

    def status(self) -> HeldStatus:
        with translate_errors("read held GPU work"):
            pipe = self.r.pipeline(transaction=False)
            pipe.zcard(self.keys.gpu_held_order())
            pipe.zcard(self.keys.gpu_held_due())
            pipe.zrange(self.keys.gpu_held_order(), 0, 0, withscores=True)
            pipe.zrange(self.keys.gpu_held_due(), 0, 0, withscores=True)
            pipe.hgetall(self.keys.gpu_released_total())
            held, with_dl, oldest, nxt, released = pipe.execute()
        return HeldStatus(
            int(held), int(with_dl), oldest[0][1] if oldest else None, nxt[0][1] if nxt else None,
            {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in released.items()})

    def held_items(self, limit: int = 100) -> Iterable[dict[str, Any]]:
        ids = self._fifo(limit)
        for item_id, v in zip(ids, self.r.hmget(self.keys.gpu_held_items(), ids) if ids else [],
                              strict=True):
            if v is not None:
                yield {"id": item_id} | json.loads(v)


def run_releaser(deferral: Deferral, *, clock: Clock = utcnow,
                 sleep: Callable[[float], object] = time.sleep, interval_s: float | None = None,
                 stop: threading.Event | None = None, max_ticks: int | None = None) -> int:
    """Tick ``release_due`` every ``interval_s`` until ``stop`` is set (or ``max_ticks``).

    A broker error is logged and retried next tick: the releaser never crash-loops on a
    Redis blip, and the held set stays put until a tick succeeds.
    """
    from worker_mesh.mesh.errors import TransientError
    from worker_mesh.mesh.outage import OutageLog

    outage = OutageLog(log, "releaser: Redis")
    interval = interval_s if interval_s is not None else deferral.gpu.release_interval_s
    total = ticks = 0
    while not (stop and stop.is_set()) and (max_ticks is None or ticks < max_ticks):
        try:
            total += deferral.release_due(clock())
            outage.ok()
        except TransientError as exc:
            outage.failed(exc, interval)  # logged once per change of state
        ticks += 1
        if max_ticks is not None and ticks >= max_ticks:
            break
        sleep(interval)
    return total
