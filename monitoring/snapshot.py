"""One read of the mesh's state from Redis: streams, dead letters, queues, workers,
running tasks, workflow freshness, result staleness, the GPU backlog.

Both ``mesh exporter`` (``monitoring.collector``, at every scrape) and ``mesh status``
read through here, so the dashboard and the status screen cannot disagree. Every read
is bounded (a fixed number of commands per partition / queue / workflow); nothing scans
the keyspace. The only writes: a workflow's first-seen time, and the removal of
heartbeats and running-task entries left behind by killed workers.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from worker_mesh.gpu_pool.routing import ALL_QUEUES
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring.celery_hooks import running_key, workers_key
from worker_mesh.monitoring.metrics import results_key

UNACKED_PARSE_MAX = 10_000
"""Reserved tasks are counted per queue from at most this many unacked messages."""
PRIORITY_SEP = "\x06\x16"
HEARTBEAT_FORGET_S = 86_400
"""Heartbeats silent this long are deleted (the worker is not coming back)."""


@dataclass
class StreamInfo:
    partition: int
    length: int = 0
    entries_added: int = 0
    lag: int | None = 0
    pending: int = 0
    consumers: int = 0
    consumers_active: int = 0


@dataclass
class WorkflowInfo:
    name: str
    sla_s: int
    last_success: float | None
    successes: int = 0
    failures: int = 0
    retries: int = 0
    registered_at: float | None = None

    def age_s(self, now: float) -> float | None:
        return None if self.last_success is None else max(now - self.last_success, 0.0)

    def within_sla(self, now: float) -> bool:
        """Fresh, or never run yet but registered less than one SLA ago."""
        if self.last_success is not None:
            return now - self.last_success <= self.sla_s
        return self.registered_at is not None and now - self.registered_at <= self.sla_s


@dataclass
class Snapshot:
    taken_at: float
    streams: list[StreamInfo] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    dlq_length: int = 0
    dlq_added: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    worker_processes: dict[str, int] = field(default_factory=dict)
    running: list[dict[str, Any]] = field(default_factory=list)
    workflows: list[WorkflowInfo] = field(default_factory=list)
    results: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    gpu_held: dict[str, int] = field(default_factory=dict)
    gpu_held_oldest: float | None = None
    gpu_released: dict[str, int] = field(default_factory=dict)
    gpu_seconds: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """(task type, peak|offpeak, deferred|direct) -> GPU-seconds, from the GPU pool."""
    offpeak_open: bool | None = None
    offpeak_next: float | None = None
    offpeak_end: float | None = None
    result_max_age: dict[str, int] = field(default_factory=dict)
    """Result kind -> age (s) past which a stored result is stale."""
    runs_counts: dict[str, int] = field(default_factory=dict)
    """The run ledger's counters: started, succeeded, failed, cancelled, redriven."""
    runs_in_flight: int = 0
    runs_overdue: dict[str, int] = field(default_factory=dict)
    """Workflow -> runs in flight past their re-drive deadline (stuck)."""
    errors: list[str] = field(default_factory=list)

    @property
    def dispatchers_alive(self) -> int:
        return max((s.consumers_active for s in self.streams), default=0)

    def out_of_sla(self) -> list[str]:
        return [w.name for w in self.workflows if not w.within_sla(self.taken_at)]


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _info_get(info: dict[Any, Any], name: str, default: Any = None) -> Any:
    return info.get(name, info.get(name.encode(), default))


def take(client: redis.Redis, settings: MeshSettings, workflows: list[Any] | None = None,
         now: float | None = None) -> Snapshot:
    """Read everything; a part that fails is recorded in ``errors``, not raised
    (except a Redis that cannot be reached at all)."""
    keys = Keys(settings.redis.key_prefix)
    snap = Snapshot(taken_at=time.time() if now is None else now)
    _streams(client, settings, keys, snap)
    _dlq(client, keys, snap)
    _queues(client, keys, snap)
    _workers(client, settings, keys, snap)
    _workflows(client, keys, workflows or [], snap)
    _runs(client, settings, keys, snap)
    _results(client, keys, snap, result_kinds(workflows or []))
    _gpu(client, settings, keys, snap)
    return snap


def _streams(client: redis.Redis, settings: MeshSettings, keys: Keys, snap: Snapshot) -> None:
    group = settings.dispatcher.group
    active_ms = max(settings.dispatcher.claim_idle_ms, 10 * settings.dispatcher.block_ms)
    totals: Counter[str] = Counter()
    for p in range(settings.streams.partitions):
        si = StreamInfo(partition=p)
        stream = keys.stream(p)
        try:
            info = client.xinfo_stream(stream)
            si.length = int(_info_get(info, "length", 0))
            si.entries_added = int(_info_get(info, "entries-added", si.length) or 0)
            for g in client.xinfo_groups(stream):
                if _s(_info_get(g, "name")) != group:
                    continue
                lag = _info_get(g, "lag")
                si.lag = None if lag is None else int(lag)
                si.pending = int(_info_get(g, "pending", 0))
                for c in client.xinfo_consumers(stream, group):
                    si.consumers += 1
                    idle = int(_info_get(c, "inactive", _info_get(c, "idle", 0)) or 0)
                    if idle < active_ms:
                        si.consumers_active += 1
        except redis.ResponseError:
            pass  # no such stream yet: nothing published
        for k, v in client.hgetall(keys.outcomes(p)).items():
            name = _s(k)
            if "|" not in name:
                totals[name] += int(v)
        snap.streams.append(si)
    snap.outcomes = dict(totals)


def _dlq(client: redis.Redis, keys: Keys, snap: Snapshot) -> None:
    try:
        info = client.xinfo_stream(keys.dlq)
        snap.dlq_length = int(_info_get(info, "length", 0))
        snap.dlq_added = int(_info_get(info, "entries-added", snap.dlq_length) or 0)
    except redis.ResponseError:
        pass


def _queues(client: redis.Redis, keys: Keys, snap: Snapshot) -> None:
    cp = keys.celery_prefix()
    pipe = client.pipeline(transaction=False)
    for q in ALL_QUEUES:
        for step in ("", *(f"{PRIORITY_SEP}{n}" for n in (3, 6, 9))):
            pipe.llen(f"{cp}{q}{step}")
    lens = pipe.execute()
    for i, q in enumerate(ALL_QUEUES):
        snap.queues[q] = int(sum(lens[i * 4:(i + 1) * 4]))
    reserved: Counter[str] = Counter({q: 0 for q in ALL_QUEUES})
    for _tag, raw in client.hscan_iter(f"{cp}unacked", count=1000):
        if sum(reserved.values()) >= UNACKED_PARSE_MAX:
            break
        try:
            _msg, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        reserved[routing_key if routing_key in ALL_QUEUES else "other"] += 1
    snap.reserved = dict(reserved)


def _workers(client: redis.Redis, settings: MeshSettings, keys: Keys, snap: Snapshot) -> None:
    alive: Counter[str] = Counter({q: 0 for q in ALL_QUEUES})
    procs: Counter[str] = Counter({q: 0 for q in ALL_QUEUES})
    gone: list[Any] = []
    for node, raw in client.hgetall(workers_key(keys)).items():
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        silent_s = snap.taken_at - float(beat.get("ts", 0))
        if silent_s > HEARTBEAT_FORGET_S:  # killed without a clean shutdown, long ago
            gone.append(node)
        if silent_s > settings.monitoring.worker_dead_after_s:
            continue
        for q in beat.get("queues", []):
            alive[q] += 1
            procs[q] += int(beat.get("concurrency", 1))
    snap.workers, snap.worker_processes = dict(alive), dict(procs)
    if gone:
        client.hdel(workers_key(keys), *gone)
    horizon = settings.celery.visibility_timeout_s
    stale: list[Any] = []
    for task_id, raw in client.hgetall(running_key(keys)).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            stale.append(task_id)
            continue
        age = snap.taken_at - float(entry.get("started", snap.taken_at))
        if age > horizon:  # redelivered long ago; its worker died without cleaning up
            stale.append(task_id)
            continue
        entry["task_id"], entry["age_s"] = _s(task_id), max(age, 0.0)
        snap.running.append(entry)
    if stale:
        client.hdel(running_key(keys), *stale)


def _workflows(client: redis.Redis, keys: Keys, workflows: list[Any], snap: Snapshot) -> None:
    last = {_s(k): float(v) for k, v in client.hgetall(keys.runs_last_success()).items()}
    reg_key = keys.ns("mon", "workflows", "registered")
    pipe = client.pipeline(transaction=False)
    for wf in workflows:
        pipe.hsetnx(reg_key, wf.name, f"{snap.taken_at:.3f}")
    pipe.hgetall(reg_key)
    registered = {_s(k): float(v) for k, v in pipe.execute()[-1].items()}
    for wf in workflows:
        stats = {_s(k): int(v) for k, v in client.hgetall(keys.runs_stats(wf.name)).items()}
        snap.workflows.append(WorkflowInfo(
            wf.name, int(wf.sla_s), last.get(wf.name), stats.get("successes", 0),
            stats.get("failures", 0), stats.get("retries", 0), registered.get(wf.name)))


OVERDUE_READ_MAX = 1000
"""Overdue runs read per snapshot to label them by workflow (bounded)."""


def _runs(client: redis.Redis, settings: MeshSettings, keys: Keys, snap: Snapshot) -> None:
    """The run ledger (``mesh.runs``): counters, runs in flight, overdue runs. A run is
    counted overdue once past its deadline by two re-drive intervals (the re-driver
    had its chance)."""
    ledger = RunLedger(client, keys, settings.runs)
    snap.runs_counts = ledger.counts()
    snap.runs_in_flight = ledger.in_flight_count()
    grace = 2 * settings.runs.redrive_interval_s
    ids = client.zrangebyscore(keys.runs_inflight(), "-inf", snap.taken_at - grace,
                               start=0, num=OVERDUE_READ_MAX)
    if ids:
        pipe = client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(keys.run(_s(rid)), "workflow")
        snap.runs_overdue = dict(Counter(_s(w) if w else "none" for w in pipe.execute()))


BUILTIN_RESULT_KINDS = {"churn": 172_800, "embedding": 172_800, "content": 172_800}
"""Result kinds of the built-in pack -> max age (s) before the staleness alert."""


def result_kinds(workflows: list[Any]) -> dict[str, int]:
    """Result kind -> max age (s): the built-in kinds plus what each registered
    workflow declares (``@workflow(results={"order-score": 86400})``)."""
    kinds = dict(BUILTIN_RESULT_KINDS)
    for wf in workflows:
        kinds.update(dict(getattr(wf, "results", ()) or ()))
    return kinds


def _results(client: redis.Redis, keys: Keys, snap: Snapshot, kinds: dict[str, int]) -> None:
    snap.result_max_age = kinds
    for kind in kinds:
        key = results_key(keys, kind)
        n = int(client.zcard(key))
        oldest = client.zrange(key, 0, 0, withscores=True)
        snap.results[kind] = (n, float(oldest[0][1]) if oldest else None)


def _gpu(client: redis.Redis, settings: MeshSettings, keys: Keys, snap: Snapshot) -> None:
    """Off-peak windows and held bulk items, through gpu_pool when it provides them."""
    try:
        from worker_mesh.gpu_pool.offpeak import Windows

        windows = Windows.parse(settings.gpu.offpeak_windows)
        now = datetime.fromtimestamp(snap.taken_at, UTC)
        snap.offpeak_open = windows.is_open(now)
        nxt = windows.next_open(now)
        snap.offpeak_next = None if nxt is None else nxt.timestamp()
        ends = [e for w in windows.windows if (e := w.current_end(now)) is not None]
        snap.offpeak_end = max(ends).timestamp() if ends else None
    except Exception as exc:  # module absent or a bad window spec: show, don't fail
        snap.errors.append(f"off-peak windows: {exc}")
    if not hasattr(keys, "gpu_held_order"):
        return  # GPU pool not part of this build
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.gpu_held_order())
    pipe.zrange(keys.gpu_held_order(), 0, 0, withscores=True)
    pipe.hgetall(keys.gpu_released_total())
    pipe.hgetall(keys.gpu_cost())
    held, oldest, released, cost = pipe.execute()
    snap.gpu_held = {"gpu-batch": int(held)}
    snap.gpu_held_oldest = float(oldest[0][1]) if oldest else None
    snap.gpu_released = {_s(k): int(v) for k, v in released.items()}
    for k, v in cost.items():
        parts = _s(k).split("|")
        if len(parts) == 3:
            snap.gpu_seconds[(parts[0], parts[1], parts[2])] = float(v)
