"""One read of the mesh's state from Redis: streams, dead letters, queues, workers,
running tasks, workflow freshness, result staleness, the GPU backlog.

Both ``mesh exporter`` (``monitoring.collector``, at every scrape) and ``mesh status``
read through here, so the dashboard and the status screen cannot disagree. Every read
is bounded (a fixed number of commands per partition / queue / workflow); nothing scans
the keyspace. The only writes: a workflow's first-seen time, the dead-letter tally
(``monitoring.dlq_tally``), and the removal of heartbeats and running-task entries left
behind by killed workers and dispatchers.
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
from worker_mesh.monitoring import dlq_tally, heartbeats
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
    """The SLA in force: ``workflows.sla_s`` when it names the workflow, else the registry's."""
    last_success: float | None
    successes: int = 0
    failures: int = 0
    retries: int = 0
    registered_at: float | None = None
    failing_alert_runs: int = 3
    """Failed runs in a row that alert (``workflows.failing_alert_runs``)."""
    failures_since_success: int = 0
    """Runs that failed since the last success (``_failure_streaks``)."""

    @property
    def failing(self) -> bool:
        return self.failures_since_success >= self.failing_alert_runs

    def age_s(self, now: float) -> float | None:
        return None if self.last_success is None else max(now - self.last_success, 0.0)

    def within_sla(self, now: float) -> bool:
        """Fresh, or never run yet but registered less than one SLA ago."""
        if self.last_success is not None:
            return now - self.last_success <= self.sla_s
        return self.registered_at is not None and now - self.registered_at <= self.sla_s


@dataclass(frozen=True)
class StuckRun:
    """A run in flight past its re-drive deadline (no progress: the stuck chord)."""

    run_id: str
    workflow: str
    overdue_s: float
    """Seconds past the deadline."""


def stuck_runs(client: redis.Redis, keys: Keys, now: float, grace_s: float = 0.0) -> list[StuckRun]:
    """Runs in flight that are stuck, from the run ledger (a bounded read of the
    in-flight index, earliest deadline first): past their re-drive deadline by more than
    ``grace_s`` (the re-driver is not running, or cannot send), or re-driven and still
    without progress since (a lost message recovers at the first re-drive and resets the
    count; a run re-driven that makes no progress is the stuck chord, the worker without
    the task, the step that hangs)."""
    rows: Any = client.zrange(keys.runs_inflight(), 0, OVERDUE_READ_MAX - 1, withscores=True)
    if not rows:
        return []
    pipe = client.pipeline(transaction=False)
    for rid, _ in rows:
        pipe.hmget(keys.run(_s(rid)), ["workflow", "redrives"])
    out = []
    for (rid, deadline), (wf, redrives) in zip(rows, pipe.execute(), strict=True):
        if float(deadline) < now - grace_s or int(redrives or 0) >= 1:
            out.append(StuckRun(_s(rid), _s(wf) if wf else "none", round(now - float(deadline), 3)))
    return out


@dataclass
class Snapshot:
    taken_at: float
    streams: list[StreamInfo] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    dlq_length: int = 0
    dlq_added: int = 0
    dlq_by: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    """(reason, event type) -> (dead letters ever, Unix time of the newest)."""
    dispatchers: int = 0
    """Dispatchers with a recent heartbeat (``monitoring.heartbeats``)."""
    dispatchers_known: int = 0
    """Dispatchers that sent a heartbeat within the last day (alive or not)."""
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
    stuck: list[StuckRun] = field(default_factory=list)
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
        return self.dispatchers

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
    snap.dispatchers, snap.dispatchers_known = heartbeats.alive(
        client, keys, snap.taken_at, settings.monitoring.worker_dead_after_s)
    _queues(client, keys, snap)
    _workers(client, settings, keys, snap)
    _workflows(client, settings, keys, workflows or [], snap)
    _runs(client, settings, keys, snap)
    _results(client, keys, snap, result_kinds(workflows or []))
    _gpu(client, settings, keys, snap)
    snap.stuck = stuck_runs(client, keys, snap.taken_at, 2 * settings.runs.redrive_interval_s)
    snap.runs_overdue = dict(Counter(r.workflow for r in snap.stuck))
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
    try:
        snap.dlq_by = dlq_tally.tally(client, keys)
    except redis.RedisError as exc:  # e.g. a cluster refusing the script's keys: show, go on
        snap.errors.append(f"dead letters by reason/type: {exc}")


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


def _workflows(client: redis.Redis, settings: MeshSettings, keys: Keys, workflows: list[Any],
               snap: Snapshot) -> None:
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
            wf.name, settings.workflows.sla_for(wf.name, int(wf.sla_s)), last.get(wf.name),
            stats.get("successes", 0), stats.get("failures", 0), stats.get("retries", 0),
            registered.get(wf.name), settings.workflows.failing_runs_for(wf.name)))
    _failure_streaks(client, keys, snap.workflows)
    names = {wf.name for wf in workflows}
    for setting in ("sla_s", "failing_alert_runs"):
        unknown = sorted(set(getattr(settings.workflows, setting)) - names)
        if unknown:
            snap.errors.append(f"workflows.{setting} names no registered workflow: "
                               f"{', '.join(unknown)}")


def _failure_streaks(client: redis.Redis, keys: Keys, infos: list[WorkflowInfo]) -> None:
    """Failures since each workflow's last success, from the run statistics' two
    counters: a hash keeps (successes, failures) as they were when the successes last
    changed; failures beyond that base are the current streak. Exact when reads are more
    frequent than runs ending; a success and failures between two reads count as a
    success (the streak restarts), which only delays ``MeshWorkflowFailing``. A
    workflow that never succeeded counts every failure."""
    key = keys.ns("mon", "workflows", "failure_base")
    bases = {_s(k): _s(v) for k, v in client.hgetall(key).items()}
    changed: dict[Any, Any] = {}  # redis-py's Mapping is invariant in its key type
    for w in infos:
        try:
            base_ok, base_failed = (int(x) for x in bases[w.name].split("|"))
        except (KeyError, ValueError):
            base_ok, base_failed = w.successes, (0 if w.successes == 0 else w.failures)
            changed[w.name] = f"{base_ok}|{base_failed}"
        if base_ok != w.successes or w.failures < base_failed:  # a success, or a reset
            base_ok, base_failed = w.successes, w.failures
            changed[w.name] = f"{base_ok}|{base_failed}"
        w.failures_since_success = w.failures - base_failed
    if changed:
        client.hset(key, mapping=changed)


OVERDUE_READ_MAX = 1000
"""Overdue runs read per snapshot to label them by workflow (bounded)."""


def _runs(client: redis.Redis, settings: MeshSettings, keys: Keys, snap: Snapshot) -> None:
    """The run ledger (``mesh.runs``): counters, runs in flight, overdue runs. A run is
    counted overdue once past its deadline by two re-drive intervals (the re-driver
    had its chance)."""
    ledger = RunLedger(client, keys, settings.runs)
    snap.runs_counts = ledger.counts()
    snap.runs_in_flight = ledger.in_flight_count()


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
        end = _window_end(windows, now)
        snap.offpeak_end = None if end is None else end.timestamp()
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


def _window_end(windows: Any, now: datetime) -> datetime | None:
    """When the open off-peak time ends: windows that follow each other without a gap
    (``00:00-24:00``, or ``22:00-24:00`` then ``00:00-06:00``) count as one, so an
    all-day window never "closes within 30 minutes" at 23:40."""
    end: datetime | None = None
    at = now
    for _ in range(8):  # open for more than a week: far enough
        ends = [e for w in windows.windows if (e := w.current_end(at)) is not None]
        if not ends:
            return end
        end = max(ends)
        if not windows.is_open(end):
            return end
        at = end
    return end
