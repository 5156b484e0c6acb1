"""``mesh gpu trace record``: a trace of what a running mesh submits to the GPU queues.

Where GPU submissions are visible, and why this hook:

- **Celery ``task-sent`` events** (chosen). The mesh's apps already emit them
  (``task_send_sent_event``, for Flower); each names the task, its queue and the
  sender's timestamp. Reading them is what Flower does: one event consumer, no change
  to any producer, no extra write on the hot path, no payload read or kept (args are
  dropped on arrival). Held bulk work is not sent until its release, so:
- **the deferral's held set** (``{prefix:gpu}:held:*``), polled: each new held item is
  recorded at its ``submitted_at`` with its deadline (the demand, not the release).
  Releases then send those items again as ``task-sent`` on ``gpu-batch``; the
  releaser's counter (``{prefix:gpu}:released``) says how many, and that many
  ``gpu-batch`` sends are not recorded twice (events are processed ``grace_s`` late
  so the counter is read first).

Rejected: a ``before_task_publish`` hook (code and a Redis write in every producer),
``MONITOR`` (halves Redis throughput and sees payloads), keyspace notifications (need
``CONFIG SET`` and carry no task names), polling queue lengths (misses what workers
take between two polls).

Limits: an item is one task message (a task that embeds a plan's N chunks counts
once); the dispatcher does not emit ``task-sent`` for the first task of a run it starts
(``chains.starter``'s ``sent_events``), so a GPU task that is a run's first step is seen
only when it is held (bulk) or when sent events are on for the dispatcher. Sends are
aggregated per ``bucket_s`` second, task type and queue into one line with
``span_s = bucket_s``.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

from worker_mesh.gpu_pool.routing import GPU_QUEUES, Resource, queue_for
from worker_mesh.gpu_pool.sim.trace import Record
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors

log = logging.getLogger(__name__)

TASK_TYPES = {
    "mesh.gpu.embed": "embed", "mesh.gpu.embed_bulk": "embed",
    "mesh.embedding.embed": "embed", "mesh.embedding.reembed_all": "embed",
    "mesh.churn.rescore_shard": "churn_rescore",
}
"""Task name -> the batcher's task type (the node model's curve); others keep their name."""


def task_type_of(name: str) -> str:
    return TASK_TYPES.get(name, name)


def _gpu_tasks(sig: Any) -> list[str]:
    """The GPU task names inside a held signature dict (a chord's header, a chain's or
    group's tasks, or the task itself)."""
    if isinstance(sig, list):
        return [n for s in sig for n in _gpu_tasks(s)]
    if not isinstance(sig, dict):
        return []
    kind, kwargs = sig.get("subtask_type"), sig.get("kwargs") or {}
    if kind == "chain":  # its first task is the GPU work (``sig_resource``)
        return _gpu_tasks((kwargs.get("tasks") or [])[:1])
    if kind == "group":
        return _gpu_tasks(kwargs.get("tasks") or [])
    if kind == "chord":
        return _gpu_tasks(kwargs.get("header") or [])
    return [str(sig.get("task", ""))]


class Recorder:
    """Collects GPU submissions; ``flush(now)`` returns the trace lines that are due."""

    def __init__(self, client: redis.Redis, keys: Keys, *, bucket_s: float = 1.0,
                 grace_s: float = 2.0) -> None:
        self.r, self.keys = client, keys
        self.bucket_s, self.grace_s = bucket_s, grace_s
        self.events: queue.Queue[tuple[float, str, str]] = queue.Queue()
        self.seen_held: set[str] = set()
        self.held_since = time.time()
        """Items held before the recorder started are not part of its trace."""
        self.released = self._released_total()
        self.skip = 0
        self.pending: list[tuple[float, str, str]] = []
        self.out: list[Record] = []
        self.counts: Counter[str] = Counter()

    # -- inputs ---------------------------------------------------------------------------
    def on_sent(self, event: dict[str, Any]) -> None:
        """A ``task-sent`` event; only its name, queue and timestamp are kept."""
        q = event.get("queue") or event.get("routing_key")
        if q in GPU_QUEUES:
            self.events.put((float(event.get("timestamp") or time.time()),
                             str(event.get("name", "")), str(q)))

    def _released_total(self) -> int:
        with translate_errors("read released GPU work"):
            raw = self.r.hgetall(self.keys.gpu_released_total())
        return sum(int(v) for v in raw.values())

    def poll_held(self) -> None:
        """New held items (recorded at submission, with their deadline) and the
        releaser's counter (that many later ``gpu-batch`` sends are releases)."""
        with translate_errors("read held GPU work"):
            total = self._released_total()
            found: list[Any] = self.r.zrangebyscore(  # type: ignore[assignment]
                self.keys.gpu_held_order(), self.held_since, "+inf", withscores=True)
            new: list[str] = []
            for raw_id, score in found:
                item_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                self.held_since = max(self.held_since, float(score))
                if item_id not in self.seen_held:
                    new.append(item_id)
            raw = self.r.hmget(self.keys.gpu_held_items(), new) if new else []
        self.skip += max(0, total - self.released)
        self.released = total
        for item_id, v in zip(new, raw, strict=True):
            self.seen_held.add(item_id)
            if v is None:
                continue
            rec = json.loads(v)
            names = _gpu_tasks(rec.get("sig")) or ["unknown"]
            for name, n in Counter(names).items():
                self.out.append(Record(float(rec["submitted_at"]), task_type_of(name), n, False,
                                       rec.get("deadline")))
                self.counts["held"] += n

    # -- output ---------------------------------------------------------------------------
    def flush(self, now: float, final: bool = False) -> list[Record]:
        """Process events older than ``grace_s`` (all when ``final``); return the lines
        ready to write, sorted by time."""
        while True:
            try:
                self.pending.append(self.events.get_nowait())
            except queue.Empty:
                break
        cutoff = math.inf if final else now - self.grace_s
        keep: list[tuple[float, str, str]] = []
        due: list[tuple[float, str, str]] = []
        for ev in self.pending:
            (due if ev[0] <= cutoff else keep).append(ev)
        self.pending = keep
        buckets: Counter[tuple[float, str, bool]] = Counter()
        for ts, name, q in sorted(due):
            urgent = q == queue_for(Resource.GPU)
            if not urgent and self.skip > 0:
                self.skip -= 1
                self.counts["release_skipped"] += 1
                continue
            b = math.floor(ts / self.bucket_s) * self.bucket_s
            buckets[(b, task_type_of(name), urgent)] += 1
            self.counts["urgent" if urgent else "bulk_direct"] += 1
        for (b, tt, urgent), n in buckets.items():
            self.out.append(Record(b, tt, n, urgent, None, self.bucket_s))
        out, self.out = sorted(self.out, key=lambda r: r.t), []
        return out


def capture(app: Any, recorder: Recorder, stop: threading.Event,
            ready: threading.Event | None = None) -> None:
    """Consume the mesh's Celery events until ``stop`` (runs in a thread)."""
    def on_any(event: dict[str, Any]) -> None:
        if ready is not None and not ready.is_set():
            ready.set()
        if event.get("type") == "task-sent":
            recorder.on_sent(event)

    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": on_any})
        def stop_when_asked() -> None:
            stop.wait()
            recv.should_stop = True

        watcher = threading.Thread(target=stop_when_asked, daemon=True)
        watcher.start()
        recv.capture(limit=None, timeout=None, wakeup=True)


def record(app: Any, client: redis.Redis, keys: Keys, write: Callable[[list[Record]], None], *,
           stop: threading.Event, poll_s: float = 1.0, bucket_s: float = 1.0,
           ready: threading.Event | None = None) -> Recorder:
    """Record until ``stop`` is set, handing each batch of lines to ``write``."""
    rec = Recorder(client, keys, bucket_s=bucket_s)
    t = threading.Thread(target=capture, args=(app, rec, stop, ready), daemon=True,
                         name="mesh-trace-events")
    t.start()
    while not stop.wait(poll_s):
        rec.poll_held()
        lines = rec.flush(time.time())
        if lines:
            write(lines)
    t.join(10)
    rec.poll_held()
    write(rec.flush(time.time(), final=True))
    return rec
