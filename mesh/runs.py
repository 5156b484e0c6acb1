"""The run lifecycle: the one place that owns a workflow run's states, keys and
transitions (the run ledger). Everything else - the starter, the task wrapper, the
failure callback, the re-driver, ``mesh audit``, ``mesh status`` - calls it.

::

    start --> started --step done--> started --...--> last step done --> succeeded
                 |  \\
                 |   +-- a step failed for good ------------------------> failed
                 |   +-- re-driven ``redrive_max`` times, no progress --> failed
                 +------ cancel -------------------------------------------> cancelled

* Every transition is one Lua script, so a run ends in exactly one outcome however
  often its messages are redelivered, and the counters ``mesh audit`` reconciles
  (``started == succeeded + failed + cancelled + in flight``) move with the state.
* A run in flight sits in a sorted set scored by its *deadline*: the time by which it
  must make progress. Finishing a step moves it to ``now + redrive_queued_after_s``
  (the next step must start by then); starting a step moves it to ``now +`` the kind's
  ``redrive_running_after_s`` (the worker must finish it by then); a retry to
  ``now + countdown + redrive_queued_after_s``. A run past its deadline is *overdue*:
  its message was lost (Redis restart, unregistered task, killed worker, lost ack)
  and ``redrive_overdue`` re-sends its canvas with the same task ids.
* Each step's result is memoized in the run's memo hash when the step succeeds; a
  re-sent step that already succeeded returns that result instead of running again,
  which is what makes re-driving (and resuming a replayed run) safe and cheap.

All keys share the hash tag ``{<prefix>:runs}`` (``mesh.keys``), so the scripts stay
in one Redis Cluster slot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings.runs import RunSettings

__all__ = ["FINISHED_TASK", "Begin", "Overdue", "RunLedger", "RunRecord", "StepInfo", "WorkflowStats",
           "redrive_overdue", "split_task_id"]

log = logging.getLogger("mesh.runs")

STARTED, SUCCEEDED, FAILED, CANCELLED = "started", "succeeded", "failed", "cancelled"
OUTCOMES = (SUCCEEDED, FAILED, CANCELLED)
DURATIONS_KEPT = 2000
NOT_KEPT = "-"
"""Memo value of a step that succeeded but whose result was too large to keep."""
RUN_ID_LEN = 36
FINISHED_TASK = "mesh.run.finished"
"""The bookkeeping step appended to runs that do not end in a mesh task (its success
is the run's success)."""


def split_task_id(task_id: str | None) -> tuple[str, str] | None:
    """``(run_id, step)`` of a run's task id ``<run uuid>:<step>``, else None (a task
    that is not a step of a run: a failure callback, a scheduled task)."""
    if not task_id or len(task_id) <= RUN_ID_LEN + 1 or task_id[RUN_ID_LEN] != ":":
        return None
    run_id = task_id[:RUN_ID_LEN]
    if run_id.count("-") != 4:
        return None
    return run_id, task_id[RUN_ID_LEN + 1:]


# -- Lua ------------------------------------------------------------------------------
# A run's deadline is the max of its running steps' deadlines (fields ``r:<step>``) and
# ``now + queued`` - so a chord member that finishes early does not shorten the
# deadline of a long member still running.
_DEADLINE = """
local function deadline(run, base)
  local d = tonumber(base)
  local all = redis.call('HGETALL', run)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'r:' then
      local v = tonumber(all[i + 1])
      if v > d then d = v end
    end
  end
  return d
end
"""

_FINISH = """
local function finish(tag, run_id, outcome, now, retention, reason, kept)
  local run = tag .. ':run:' .. run_id
  local wf = redis.call('HGET', run, 'workflow') or '?'
  local started = tonumber(redis.call('HGET', run, 'started_at') or now)
  redis.call('HSET', run, 'state', outcome, 'finished_at', now, 'reason', reason)
  local drop = {'canvas'}
  local all = redis.call('HKEYS', run)
  for i = 1, #all do
    if string.sub(all[i], 1, 2) == 'r:' then drop[#drop + 1] = all[i] end
  end
  redis.call('HDEL', run, unpack(drop))
  redis.call('ZREM', tag .. ':inflight', run_id)
  local counts = tag .. ':counts'
  redis.call('HINCRBY', counts, outcome, 1)
  redis.call('HINCRBY', counts, wf .. '|' .. outcome, 1)
  local stats = tag .. ':stats:' .. wf
  if outcome == 'succeeded' then
    redis.call('HINCRBY', stats, 'successes', 1)
    local durs = tag .. ':durations:' .. wf
    redis.call('LPUSH', durs, string.format('%.6f', math.max(tonumber(now) - started, 0)))
    redis.call('LTRIM', durs, 0, tonumber(kept) - 1)
    redis.call('HSET', tag .. ':last_success', wf, string.format('%.3f', tonumber(now)))
  elseif outcome == 'failed' then
    redis.call('HINCRBY', stats, 'failures', 1)
  else
    redis.call('HINCRBY', stats, 'cancelled', 1)
  end
  redis.call('EXPIRE', run, retention)
  redis.call('EXPIRE', tag .. ':memo:' .. run_id, retention)
end
"""

# ARGV: tag, run_id, deadline, resume_of ('' none), field, value, ...
_START = """
local tag, run_id = ARGV[1], ARGV[2]
local run = tag .. ':run:' .. run_id
if redis.call('EXISTS', run) == 1 then return 0 end
local fv = {}
for i = 5, #ARGV do fv[#fv + 1] = ARGV[i] end
redis.call('HSET', run, unpack(fv))
redis.call('ZADD', tag .. ':inflight', ARGV[3], run_id)
local wf = redis.call('HGET', run, 'workflow')
redis.call('HINCRBY', tag .. ':counts', 'started', 1)
redis.call('HINCRBY', tag .. ':counts', wf .. '|started', 1)
if ARGV[4] ~= '' then
  local old = tag .. ':memo:' .. ARGV[4]
  if redis.call('EXISTS', old) == 1 then
    redis.call('COPY', old, tag .. ':memo:' .. run_id, 'REPLACE')
    redis.call('PERSIST', tag .. ':memo:' .. run_id)
  end
end
return 1
"""

# ARGV: tag, run_id, step, running deadline, now
_BEGIN = """
local tag, run_id, step = ARGV[1], ARGV[2], ARGV[3]
local run = tag .. ':run:' .. run_id
local st = redis.call('HGET', run, 'state')
if not st then return {false, false} end
local m = redis.call('HGET', tag .. ':memo:' .. run_id, step)
if st == 'started' and not m then
  redis.call('HSET', run, 'r:' .. step, ARGV[4], 'running', step)
  redis.call('ZADD', tag .. ':inflight', 'XX', deadline(run, ARGV[4]), run_id)
end
return {st, m}
"""

# ARGV: tag, run_id, step, memo value, queued deadline, now, retention, kept
# Returns 0: run not in flight (unknown or finished), 1: progress, 2: run succeeded.
_DONE = """
local tag, run_id, step = ARGV[1], ARGV[2], ARGV[3]
local run = tag .. ':run:' .. run_id
if redis.call('HGET', run, 'state') ~= 'started' then return 0 end
redis.call('HSET', tag .. ':memo:' .. run_id, step, ARGV[4])
redis.call('HDEL', run, 'r:' .. step, 'running')
if redis.call('HGET', run, 'last') == step then
  finish(tag, run_id, 'succeeded', ARGV[6], ARGV[7], '', ARGV[8])
  return 2
end
redis.call('HSET', run, 'progress_at', ARGV[6], 'done_step', step, 'redrives', 0)
redis.call('ZADD', tag .. ':inflight', 'XX', deadline(run, ARGV[5]), run_id)
return 1
"""

# ARGV: tag, run_id, step, retry deadline, workflow-less
_RETRY = """
local tag, run_id, step = ARGV[1], ARGV[2], ARGV[3]
local run = tag .. ':run:' .. run_id
if redis.call('HGET', run, 'state') ~= 'started' then return 0 end
redis.call('HSET', run, 'r:' .. step, ARGV[4])
redis.call('HINCRBY', run, 'retries', 1)
local wf = redis.call('HGET', run, 'workflow')
redis.call('HINCRBY', tag .. ':stats:' .. wf, 'retries', 1)
redis.call('ZADD', tag .. ':inflight', 'XX', deadline(run, ARGV[4]), run_id)
return 1
"""

# ARGV: tag, run_id, outcome, now, retention, reason, kept, claimer ('' none)
# Returns 1 when this call ended the run; for 'failed' with a claimer, also 1 when the
# run failed earlier under the same claimer and its dead letter is not recorded yet
# (a retried failure callback), so the event is dead-lettered exactly once.
_END = """
local tag, run_id = ARGV[1], ARGV[2]
local run = tag .. ':run:' .. run_id
local st = redis.call('HGET', run, 'state')
if st == 'started' then
  finish(tag, run_id, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', run, 'dlq_claim', ARGV[8]) end
  return 1
end
if st and ARGV[8] ~= '' and st == ARGV[3] and not redis.call('HGET', run, 'dlq_id') then
  if redis.call('HSETNX', run, 'dlq_claim', ARGV[8]) == 1 then return 1 end
  if redis.call('HGET', run, 'dlq_claim') == ARGV[8] then return 1 end
end
return 0
"""

# ARGV: tag, now, limit, next deadline. Returns run_id, redrives, run_id, redrives...
_CLAIM = """
local tag = ARGV[1]
local inflight = tag .. ':inflight'
local ids = redis.call('ZRANGEBYSCORE', inflight, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local run = tag .. ':run:' .. id
  if redis.call('EXISTS', run) == 0 then
    redis.call('ZREM', inflight, id)
  else
    redis.call('ZADD', inflight, ARGV[4], id)
    local drop = {}
    local all = redis.call('HKEYS', run)
    for i = 1, #all do
      if string.sub(all[i], 1, 2) == 'r:' then drop[#drop + 1] = all[i] end
    end
    if #drop > 0 then redis.call('HDEL', run, unpack(drop)) end
    local n = redis.call('HINCRBY', run, 'redrives', 1)
    redis.call('HINCRBY', run, 'redrives_total', 1)
    redis.call('HINCRBY', tag .. ':counts', 'redriven', 1)
    out[#out + 1] = id
    out[#out + 1] = n
  end
end
return out
"""


@dataclass(frozen=True)
class StepInfo:
    """One task of a run's canvas, in canvas order."""

    step: str
    task: str
    kind: str = ""


@dataclass(frozen=True)
class RunRecord:
    """What the starter knows of a run when it hands it to the broker."""

    run_id: str
    workflow: str
    version: str
    event_id: str
    event_type: str
    entity: str
    steps: Sequence[StepInfo]
    last: str
    """The step whose success is the run's success."""
    canvas: str
    """The run's canvas as JSON (what the re-driver re-sends)."""
    held: bool = False
    """Bulk GPU work held for an off-peak window (not sent yet)."""
    resume_of: str = ""
    """A failed run whose memoized steps this run reuses (a dead-letter replay)."""
    attrs: Mapping[str, str] = field(default_factory=dict)
    """Anything else worth keeping with the run (model version, source...)."""


@dataclass(frozen=True)
class Begin:
    """What the wrapper learns before running a step."""

    state: str | None
    """None: the run is not in the ledger (a task sent outside a run)."""
    memo: str | None
    """The step's stored result (JSON) when it already succeeded in this run."""

    @property
    def memoized(self) -> bool:
        return self.memo is not None and self.memo != NOT_KEPT

    @property
    def result(self) -> Any:
        return json.loads(self.memo) if self.memo is not None else None


@dataclass(frozen=True)
class Overdue:
    run_id: str
    redrives: int
    record: dict[str, str]

    @property
    def first_unfinished(self) -> str:
        return self.record.get("_first_unfinished", "")


@dataclass(frozen=True)
class WorkflowStats:
    workflow: str
    successes: int
    failures: int
    retries: int
    p50_s: float | None
    p95_s: float | None
    last_success_ts: float | None
    cancelled: int = 0

    @property
    def runs(self) -> int:
        return self.successes + self.failures


class RunLedger:
    """The run lifecycle in Redis. The client and settings are passed in."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: RunSettings | None = None) -> None:
        self._r = client
        self._k = keys
        self.settings = settings or RunSettings()
        self._tag = keys.runs_tag()
        self._start = client.register_script(_START)
        self._begin = client.register_script(_DEADLINE + _BEGIN)
        self._done = client.register_script(_DEADLINE + _FINISH + _DONE)
        self._retry = client.register_script(_DEADLINE + _RETRY)
        self._end = client.register_script(_FINISH + _END)
        self._claim = client.register_script(_CLAIM)

    # -- transitions -------------------------------------------------------------------
    def start_many(self, records: Sequence[RunRecord], *, now: float | None = None) -> list[bool]:
        """Record runs as started (before their messages are sent: a run whose send is
        lost is then re-driven). Returns, per record, whether it is new."""
        now = time.time() if now is None else now
        pipe = self._r.pipeline(transaction=False)
        for rec in records:
            wait = self.settings.held_after_s if rec.held else self.settings.redrive_queued_after_s
            fields: dict[str, str] = {
                "state": STARTED, "workflow": rec.workflow, "version": rec.version,
                "event_id": rec.event_id, "event_type": rec.event_type, "entity": rec.entity,
                "started_at": f"{now:.6f}", "progress_at": f"{now:.6f}", "last": rec.last,
                "steps": json.dumps([[s.step, s.task, s.kind] for s in rec.steps]),
                "canvas": rec.canvas, "held": "1" if rec.held else "0",
                "resume_of": rec.resume_of, **rec.attrs,
            }
            argv: list[str | float] = [self._tag, rec.run_id, now + wait, rec.resume_of]
            for k, v in fields.items():
                argv += [k, v]
            self._start(keys=[self._k.run(rec.run_id)], args=argv, client=pipe)
        return [bool(x) for x in pipe.execute()] if records else []

    def begin(self, run_id: str, step: str, kind: str, *, now: float | None = None) -> Begin:
        """A step is about to run: its memoized result if it already succeeded, else
        the run's deadline moves to ``now +`` the kind's running allowance."""
        now = time.time() if now is None else now
        deadline = now + self.settings.running_after_s(kind)
        st, memo = self._begin(keys=[self._k.run(run_id)],
                               args=[self._tag, run_id, step, f"{deadline:.3f}", f"{now:.6f}"])
        return Begin(_opt(st), _opt(memo))

    def step_done(self, run_id: str, step: str, result: Any, *, memo: bool = True,
                  now: float | None = None) -> int:
        """A step succeeded: memoize its result and move the deadline (or, for the run's
        last step, end the run as succeeded). Returns 0 (run not in flight), 1 or 2."""
        now = time.time() if now is None else now
        value = NOT_KEPT
        if memo:
            text = json.dumps(result, separators=(",", ":"), default=str)
            if len(text) <= self.settings.memo_max_bytes:
                value = text
        deadline = now + self.settings.redrive_queued_after_s
        return int(self._done(
            keys=[self._k.run(run_id)],
            args=[self._tag, run_id, step, value, f"{deadline:.3f}", f"{now:.6f}",
                  self.settings.retention_s, DURATIONS_KEPT]))

    def step_retry(self, run_id: str, step: str, countdown_s: float, *,
                   now: float | None = None) -> bool:
        """A step will be retried in ``countdown_s``: counted, and the deadline leaves
        room for the wait."""
        now = time.time() if now is None else now
        deadline = now + max(countdown_s, 0) + self.settings.redrive_queued_after_s
        return bool(self._retry(keys=[self._k.run(run_id)],
                                args=[self._tag, run_id, step, f"{deadline:.3f}"]))

    def end(self, run_id: str, outcome: str, reason: str = "", *, claimer: str = "",
            now: float | None = None) -> bool:
        """End a run in flight as ``failed`` or ``cancelled`` (success is recorded by its
        last step, ``step_done``). True when this call ended it (see ``_END``)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        now = time.time() if now is None else now
        return bool(self._end(keys=[self._k.run(run_id)],
                              args=[self._tag, run_id, outcome, f"{now:.6f}",
                                    self.settings.retention_s, reason[:2000], DURATIONS_KEPT,
                                    claimer]))

    def fail_once(self, run_id: str, reason: str, *, claimer: str) -> bool:
        """End the run as failed; True when the caller is the one to dead-letter its
        event (once per run). A run the ledger does not know (its record expired, or a
        task called outside a run) is dead-lettered once too, by a marker."""
        if self.get_field(run_id, "state") is None:
            return bool(self._r.set(self._k.run_failed_marker(run_id), claimer, nx=True,
                                    ex=self.settings.retention_s))
        return self.end(run_id, FAILED, reason, claimer=claimer)

    def succeed(self, run_id: str, *, now: float | None = None) -> bool:
        """End a run as succeeded (``mesh.run.finished``, after a final group/chord)."""
        return self.step_done(run_id, self.get_field(run_id, "last") or "finished", None,
                              now=now) == 2

    def dead_lettered(self, run_id: str, dlq_id: str) -> None:
        self._r.hset(self._k.run(run_id), "dlq_id", dlq_id)

    def note(self, run_id: str, **fields: str) -> None:
        """Attach facts to a run in flight (e.g. the task no worker knew)."""
        if fields and self._r.exists(self._k.run(run_id)):
            self._r.hset(self._k.run(run_id), mapping=dict(fields))  # type: ignore[arg-type]

    # -- re-driving ----------------------------------------------------------------------
    def claim_overdue(self, *, now: float | None = None) -> list[Overdue]:
        """Claim runs past their deadline (atomically: with several dispatchers, each
        overdue run is claimed by one of them) and push their deadline forward."""
        now = time.time() if now is None else now
        nxt = now + self.settings.redrive_queued_after_s
        raw: list[Any] = self._claim(keys=[self._k.runs_inflight()],
                                     args=[self._tag, f"{now:.6f}", self.settings.redrive_batch,
                                           f"{nxt:.3f}"])
        out: list[Overdue] = []
        for i in range(0, len(raw), 2):
            run_id = _s(raw[i])
            rec = self.get(run_id) or {}
            memo = self.memo_steps(run_id)
            rec["_first_unfinished"] = next((s for s, *_ in self.steps_of(rec) if s not in memo), "")
            out.append(Overdue(run_id, int(raw[i + 1]), rec))
        return out

    # -- reading -------------------------------------------------------------------------
    def get(self, run_id: str) -> dict[str, str] | None:
        raw: Any = self._r.hgetall(self._k.run(run_id))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    def get_field(self, run_id: str, name: str) -> str | None:
        return _opt(self._r.hget(self._k.run(run_id), name))

    def memo_steps(self, run_id: str) -> set[str]:
        return {_s(k) for k in self._r.hkeys(self._k.run_memo(run_id))}  # type: ignore[union-attr]

    @staticmethod
    def steps_of(record: Mapping[str, str]) -> list[list[str]]:
        try:
            steps = json.loads(record.get("steps", "[]"))
        except ValueError:
            return []
        return steps if isinstance(steps, list) else []

    def counts(self) -> dict[str, int]:
        raw: Any = self._r.hgetall(self._k.runs_counts())
        return {_s(k): int(v) for k, v in raw.items()}

    def in_flight_count(self) -> int:
        return int(self._r.zcard(self._k.runs_inflight()))  # type: ignore[arg-type]

    def overdue_count(self, *, now: float | None = None, grace_s: float = 0.0) -> int:
        now = time.time() if now is None else now
        return int(self._r.zcount(self._k.runs_inflight(), "-inf", now - grace_s))  # type: ignore[arg-type]

    def in_flight(self, limit: int = 50, *, now: float | None = None) -> list[dict[str, Any]]:
        """The oldest-deadline runs in flight: id, workflow, age, last finished step,
        the step running, seconds until (negative: past) the deadline."""
        now = time.time() if now is None else now
        rows: Any = self._r.zrange(self._k.runs_inflight(), 0, limit - 1, withscores=True)
        out = []
        for rid, deadline in rows:
            rec = self.get(_s(rid)) or {}
            out.append({
                "run_id": _s(rid), "workflow": rec.get("workflow", "?"),
                "event_type": rec.get("event_type", ""), "entity": rec.get("entity", ""),
                "age_s": round(now - float(rec.get("started_at", now)), 3),
                "last_finished_step": rec.get("done_step", ""),
                "running": rec.get("running", ""), "redrives": int(rec.get("redrives", 0) or 0),
                "due_in_s": round(float(deadline) - now, 3), "held": rec.get("held") == "1",
            })
        return out

    def workflow_stats(self, workflow: str) -> WorkflowStats:
        counts: Any = self._r.hgetall(self._k.runs_stats(workflow))
        raw = {_s(k): int(v) for k, v in counts.items()}
        durs = sorted(float(x) for x in self._r.lrange(self._k.runs_durations(workflow), 0, -1))  # type: ignore[union-attr]
        last = self._r.hget(self._k.runs_last_success(), workflow)
        return WorkflowStats(workflow, raw.get("successes", 0), raw.get("failures", 0),
                             raw.get("retries", 0), _pct(durs, 0.50), _pct(durs, 0.95),
                             float(last) if last else None, raw.get("cancelled", 0))  # type: ignore[arg-type]

    def last_success(self) -> dict[str, float]:
        raw: Any = self._r.hgetall(self._k.runs_last_success())
        return {_s(k): float(v) for k, v in raw.items()}


Resend = Callable[[str, str], None]
"""``resend(run_id, canvas_json)``: hand a run's canvas to the broker again."""
GiveUp = Callable[[Overdue, str], None]
"""``give_up(overdue, reason)``: dead-letter a run that will not make progress."""


def redrive_overdue(ledger: RunLedger, resend: Resend, give_up: GiveUp, *,
                    now: float | None = None) -> tuple[int, int]:
    """Re-send every overdue run from its first unfinished step (the whole canvas with
    the same task ids: steps that already succeeded return their memoized result).
    A run re-driven more than ``redrive_max`` times without progress is failed and
    handed to ``give_up``. Returns (re-sent, given up)."""
    sent = failed = 0
    for od in ledger.claim_overdue(now=now):
        step = od.first_unfinished or "?"
        task = next((t for s, t, *_ in RunLedger.steps_of(od.record) if s == step), "?")
        canvas = od.record.get("canvas", "")
        if od.redrives > ledger.settings.redrive_max or not canvas:
            why = od.record.get("unregistered", "")
            reason = (f"run {od.run_id} of workflow {od.record.get('workflow', '?')} made no "
                      f"progress at step {step} (task {task}) after {od.redrives - 1} re-drive(s)"
                      + (f"; last seen: {why}" if why else ""))
            if ledger.end(od.run_id, FAILED, reason, claimer=f"redriver:{od.run_id}"):
                give_up(od, reason)
                failed += 1
            continue
        try:
            resend(od.run_id, canvas)
            sent += 1
            log.warning("re-driving run %s (%s) from step %s (re-drive %d)", od.run_id,
                        od.record.get("workflow", "?"), step, od.redrives)
        except Exception as exc:  # the broker is down: the claim expires, tried again
            log.warning("re-driving run %s failed (%s); tried again later", od.run_id,
                        type(exc).__name__)
    return sent, failed


def _opt(v: Any) -> str | None:
    if v is None or v is False:
        return None
    return _s(v)


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]
