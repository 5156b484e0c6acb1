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

from worker_mesh.mesh import runs_lua as lua
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings.runs import RunSettings

__all__ = ["FINISHED_TASK", "Begin", "Overdue", "RunLedger", "RunRecord", "StartOutcome", "StepInfo",
           "WorkflowStats", "lineage_of", "redrive_overdue", "split_task_id"]

log = logging.getLogger("mesh.runs")

STARTED, SUCCEEDED, FAILED, CANCELLED = "started", "succeeded", "failed", "cancelled"
OUTCOMES = (SUCCEEDED, FAILED, CANCELLED)
DURATIONS_KEPT = 2000
NOT_KEPT = "-"
"""Memo value of a step that succeeded but whose result was too large to keep."""
ERROR_CHARS = 1000
WROTE_CHARS = 500
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
    supersede: bool = False
    """Cancel this workflow's run in flight for the same entity (``Workflow.supersede``)."""


@dataclass(frozen=True)
class StartOutcome:
    new: bool
    """False: the run was known (a redelivered entry)."""
    superseded: str = ""
    """The run in flight this one cancelled, if any."""


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
        self._memo_s = min(self.settings.memo_after_end_s, self.settings.retention_s)
        self._start = client.register_script(lua.INDEX + lua.FINISH + lua.START)
        self._begin = client.register_script(lua.DEADLINE + lua.STEPX + lua.BEGIN)
        self._done = client.register_script(lua.DEADLINE + lua.INDEX + lua.STEPX + lua.FINISH
                                            + lua.DONE)
        self._retry = client.register_script(lua.DEADLINE + lua.STEPX + lua.RETRY)
        self._error = client.register_script(lua.ERROR)
        self._end = client.register_script(lua.INDEX + lua.STEPX + lua.FINISH + lua.END)
        self._claim = client.register_script(lua.CLAIM)

    # -- transitions -------------------------------------------------------------------
    def start_many(self, records: Sequence[RunRecord], *, now: float | None = None) -> list[bool]:
        """Record runs as started (before their messages are sent: a run whose send is
        lost is then re-driven). Returns, per record, whether it is new."""
        return [o.new for o in self.start_runs(records, now=now)]

    def start_runs(self, records: Sequence[RunRecord], *,
                   now: float | None = None) -> list[StartOutcome]:
        """``start_many`` that also says which run in flight each new run superseded
        (its workflow has ``supersede``: a newer event for the entity cancels it)."""
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
            argv: list[str | float | int] = [
                self._tag, rec.run_id, now + wait, rec.resume_of, "1" if rec.supersede else "",
                f"{now:.6f}", self.settings.retention_s, DURATIONS_KEPT, self._memo_s]
            for k, v in fields.items():
                argv += [k, v]
            self._start(keys=[self._k.run(rec.run_id)], args=argv, client=pipe)
        if not records:
            return []
        out = []
        for rec, raw in zip(records, pipe.execute(), strict=True):
            superseded = _s(raw) if isinstance(raw, bytes | str) else ""
            if superseded:
                log.info("run %s of %s for %s superseded run %s (cancelled)", rec.run_id,
                         rec.workflow, rec.entity, superseded)
            out.append(StartOutcome(bool(superseded) or raw == 1, superseded))
        return out

    def begin(self, run_id: str, step: str, kind: str, *, now: float | None = None) -> Begin:
        """A step is about to run: its memoized result if it already succeeded, else
        the run's deadline moves to ``now +`` the kind's running allowance and the
        step's attempt is counted and timed."""
        now = time.time() if now is None else now
        deadline = now + self.settings.running_after_s(kind)
        st, memo = self._begin(keys=[self._k.run(run_id)],
                               args=[self._tag, run_id, step, f"{deadline:.3f}", f"{now:.3f}"])
        return Begin(_opt(st), _opt(memo))

    def step_done(self, run_id: str, step: str, result: Any, *, memo: bool = True,
                  now: float | None = None) -> int:
        """A step succeeded: memoize its result and move the deadline (or, for the run's
        last step, end the run as succeeded). Returns 0 (run not in flight), 1 or 2.

        Lineage comes with the result at no extra round trip: a result that names a
        ``model_version`` (or ``prompt_version``) files the run under that version
        (``idx:mv``); one that says what it ``wrote`` has that recorded for the step."""
        now = time.time() if now is None else now
        value = NOT_KEPT
        if memo:
            text = json.dumps(result, separators=(",", ":"), default=str)
            if len(text) <= self.settings.memo_max_bytes:
                value = text
        mv, wrote = lineage_of(result)
        deadline = now + self.settings.redrive_queued_after_s
        return int(self._done(
            keys=[self._k.run(run_id)],
            args=[self._tag, run_id, step, value, f"{deadline:.3f}", f"{now:.6f}",
                  self.settings.retention_s, DURATIONS_KEPT, mv, wrote, self._memo_s]))

    def step_retry(self, run_id: str, step: str, countdown_s: float, *,
                   now: float | None = None) -> bool:
        """A step will be retried in ``countdown_s``: counted, and the deadline leaves
        room for the wait."""
        now = time.time() if now is None else now
        deadline = now + max(countdown_s, 0) + self.settings.redrive_queued_after_s
        return bool(self._retry(keys=[self._k.run(run_id)],
                                args=[self._tag, run_id, step, f"{deadline:.3f}"]))

    def step_error(self, run_id: str, step: str, error: str) -> bool:
        """Keep a step's last error (``ExcType: message``, truncated) for ``mesh runs
        show``; a retry's error is recorded by the worker's retry hook."""
        return bool(self._error(keys=[self._k.run(run_id)],
                                args=[self._tag, run_id, step, error[:ERROR_CHARS]]))

    def end(self, run_id: str, outcome: str, reason: str = "", *, claimer: str = "",
            step: str = "", error: str = "", now: float | None = None) -> bool:
        """End a run in flight as ``failed`` or ``cancelled`` (success is recorded by its
        last step, ``step_done``). ``step``/``error``: the step it failed at and why.
        True when this call ended it (see ``mesh.runs_lua.END``)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        now = time.time() if now is None else now
        return bool(self._end(keys=[self._k.run(run_id)],
                              args=[self._tag, run_id, outcome, f"{now:.6f}",
                                    self.settings.retention_s, reason[:2000], DURATIONS_KEPT,
                                    claimer, step, error[:ERROR_CHARS], self._memo_s]))

    def cancel(self, run_id: str, reason: str = "cancelled by an operator", *,
               now: float | None = None) -> bool:
        """Cancel a run in flight: the step running finishes, later steps do not start
        (the task wrapper refuses steps of a run that is not ``started``)."""
        return self.end(run_id, CANCELLED, reason, now=now)

    def fail_once(self, run_id: str, reason: str, *, claimer: str, step: str = "",
                  error: str = "") -> bool:
        """End the run as failed; True when the caller is the one to dead-letter its
        event (once per run). A run the ledger does not know (its record expired, or a
        task called outside a run) is dead-lettered once too, by a marker."""
        if self.get_field(run_id, "state") is None:
            return bool(self._r.set(self._k.run_failed_marker(run_id), claimer, nx=True,
                                    ex=self.settings.retention_s))
        return self.end(run_id, FAILED, reason, claimer=claimer, step=step, error=error)

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
        """The run's record: its hash, plus the bulky fields a compacted run keeps in
        ``rec:<id>`` (``mesh.runs_lua.COMPACT``)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self._k.run(run_id))
        pipe.get(f"{self._tag}:rec:{run_id}")
        raw, packed = pipe.execute()
        if not raw:
            return None
        out: dict[str, str] = {}
        if packed:
            try:
                extra = json.loads(packed)
            except ValueError:
                extra = {}
            if isinstance(extra, dict):
                out.update({str(k): v if isinstance(v, str) else json.dumps(v)
                            for k, v in extra.items()})
        out.update({_s(k): _s(v) for k, v in raw.items()})
        return out

    def get_field(self, run_id: str, name: str) -> str | None:
        value = _opt(self._r.hget(self._k.run(run_id), name))
        if value is None and self._r.exists(f"{self._tag}:rec:{run_id}"):
            return (self.get(run_id) or {}).get(name)  # a compacted run's bulky field
        return value

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


def lineage_of(result: Any) -> tuple[str, str]:
    """(model or prompt version, what was written) named by a step's result: the keys
    ``model_version`` / ``prompt_version`` and ``wrote`` of a dict result (a string or
    a list of strings such as ``result:churn:42``)."""
    if not isinstance(result, dict):
        return "", ""
    mv = result.get("model_version") or result.get("prompt_version") or ""
    wrote = result.get("wrote") or ""
    if isinstance(wrote, list | tuple):
        wrote = " ".join(str(w) for w in wrote)
    return str(mv)[:200], str(wrote)[:WROTE_CHARS]


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
