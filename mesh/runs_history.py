"""Run history: finding runs by workflow, version, state, entity, model version and
time, and reading one run step by step (``mesh runs list|show``, ``mesh replay``).

The ledger's scripts (``mesh.runs_lua``) keep secondary indexes, sorted sets scored by
the run's start time, so a filter reads the runs of its most selective index instead
of scanning every run:

============================  ===============================================
filter                        index read
============================  ===============================================
entity                        ``idx:ent:<entity>``
model version                 ``idx:mv:<version>`` (a step's result named it)
state failed / cancelled      ``idx:state:<state>``
state started                 ``inflight`` (every run in flight)
workflow [and version]        ``idx:wf:<workflow>@<version>`` (each version)
none / state succeeded        every ``idx:wf:*`` merged, newest first
============================  ===============================================

The other filters are checked on the runs read (one pipelined ``HMGET`` per page).
``succeeded`` has no index of its own on purpose: most runs succeed, so it would cost
memory for every run and select almost all of them anyway. Every index is trimmed to
``runs.retention_s`` as it is written; a run whose record expired is skipped.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import CANCELLED, FAILED, NOT_KEPT, OUTCOMES, STARTED, RunLedger
from worker_mesh.mesh.settings.runs import RunSettings

__all__ = ["STATES", "RunDetail", "RunHistory", "RunQuery", "RunSummary", "StepRow"]

STATES = (STARTED, *OUTCOMES)
PAGE = 200
SUMMARY_FIELDS = ("state", "workflow", "version", "entity", "event_id", "event_type",
                  "started_at", "finished_at", "mv", "failed_step", "reason", "superseded_by",
                  "resume_of", "replay_of")


@dataclass(frozen=True)
class RunQuery:
    """What ``mesh runs list`` and ``mesh replay`` select (None: any)."""

    workflow: str | None = None
    version: str | None = None
    """Workflow version; needs ``workflow``."""
    state: str | None = None
    entity: str | None = None
    model_version: str | None = None
    since: float | None = None
    """Started at or after (Unix s)."""
    until: float | None = None
    """Started at or before (Unix s)."""
    failed_step: str | None = None
    """Failed at this step."""
    event_type: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        if self.version is not None and self.workflow is None:
            raise ValueError("a workflow version filter needs the workflow")

    def matches(self, rec: dict[str, str]) -> bool:
        checks = ((self.workflow, "workflow"), (self.version, "version"), (self.state, "state"),
                  (self.entity, "entity"), (self.model_version, "mv"),
                  (self.failed_step, "failed_step"), (self.event_type, "event_type"))
        if any(want is not None and rec.get(name, "") != want for want, name in checks):
            return False
        started = float(rec.get("started_at") or 0)
        return ((self.since is None or started >= self.since)
                and (self.until is None or started <= self.until))


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    workflow: str
    version: str
    state: str
    entity: str
    event_id: str
    event_type: str
    started_at: float
    finished_at: float | None
    model_version: str
    failed_step: str
    reason: str
    superseded_by: str = ""

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else round(self.finished_at - self.started_at, 6)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"duration_s": self.duration_s}

    @classmethod
    def of(cls, run_id: str, rec: dict[str, str]) -> RunSummary:
        fin = rec.get("finished_at") or ""
        return cls(run_id, rec.get("workflow", ""), rec.get("version", ""), rec.get("state", ""),
                   rec.get("entity", ""), rec.get("event_id", ""), rec.get("event_type", ""),
                   float(rec.get("started_at") or 0), float(fin) if fin else None,
                   rec.get("mv", ""), rec.get("failed_step", ""), rec.get("reason", ""),
                   rec.get("superseded_by", ""))


@dataclass(frozen=True)
class StepRow:
    """One step of a run, from its ``x:`` / ``e:`` / ``w:`` fields and the memo."""

    step: str
    task: str
    kind: str
    state: str
    """``pending`` (never started), ``running``, ``retry``, ``succeeded``, ``failed``,
    ``memoized`` (its result came from the run it resumes)."""
    attempts: int
    first_start: float | None
    last_start: float | None
    end: float | None
    error: str = ""
    wrote: str = ""

    @property
    def duration_s(self) -> float | None:
        """Last attempt, start to end."""
        if self.end is None or self.last_start is None:
            return None
        return round(self.end - self.last_start, 3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"duration_s": self.duration_s}


@dataclass(frozen=True)
class RunDetail:
    summary: RunSummary
    steps: list[StepRow]
    cause: dict[str, str]
    """The wire fields of the event that caused the run (``events.wire``)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Re-drives, retries, dead letter, trace, what it resumed..."""

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary.as_dict(), "steps": [s.as_dict() for s in self.steps],
                "cause": self.cause, **self.extra}


class RunHistory:
    """Reads the ledger's history. The client and settings are passed in."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: RunSettings | None = None) -> None:
        self._r = client
        self._k = keys
        self.settings = settings or RunSettings()
        self._tag = keys.runs_tag()

    # -- keys ------------------------------------------------------------------------
    def idx_workflow(self, workflow: str, version: str) -> str:
        return f"{self._tag}:idx:wf:{workflow}@{version}"

    def idx_entity(self, entity: str) -> str:
        return f"{self._tag}:idx:ent:{entity}"

    def idx_model(self, version: str) -> str:
        return f"{self._tag}:idx:mv:{version}"

    def idx_state(self, state: str) -> str:
        return f"{self._tag}:idx:state:{state}"

    def workflow_versions(self) -> list[tuple[str, str]]:
        raw: Any = self._r.smembers(f"{self._tag}:idx:wfv")
        out = []
        for m in sorted(_s(x) for x in raw):
            wf, _, ver = m.rpartition("@")
            out.append((wf, ver))
        return out

    # -- queries ---------------------------------------------------------------------
    def query(self, q: RunQuery, limit: int = 50, *, now: float | None = None) -> list[RunSummary]:
        """Newest first, at most ``limit``."""
        out = []
        for s in self.iter(q, now=now):
            out.append(s)
            if len(out) >= limit:
                break
        return out

    def count(self, q: RunQuery, *, now: float | None = None) -> int:
        return sum(1 for _ in self.iter(q, now=now))

    def iter(self, q: RunQuery, *, now: float | None = None) -> Iterator[RunSummary]:
        """Every run matching ``q``, newest first, read a page at a time."""
        now = time.time() if now is None else now
        floor = now - self.settings.retention_s
        lo = max(q.since if q.since is not None else floor, floor)
        hi = q.until if q.until is not None else now + 86_400
        batch: list[str] = []
        seen: set[str] = set()
        for _, run_id in self._candidates(q, lo, hi):
            if run_id in seen:
                continue
            seen.add(run_id)
            batch.append(run_id)
            if len(batch) >= PAGE:
                yield from self._check(q, batch)
                batch = []
        if batch:
            yield from self._check(q, batch)

    def _check(self, q: RunQuery, run_ids: list[str]) -> Iterator[RunSummary]:
        pipe = self._r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hmget(self._k.run(rid), SUMMARY_FIELDS)
        for rid, values in zip(run_ids, pipe.execute(), strict=True):
            if values[0] is None:
                continue  # expired past the retention
            rec = {k: _s(v) for k, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None}
            if q.matches(rec):
                yield RunSummary.of(rid, rec)

    def _candidates(self, q: RunQuery, lo: float, hi: float) -> Iterator[tuple[float, str]]:
        if q.entity is not None:
            return self._scan(self.idx_entity(q.entity), lo, hi)
        if q.model_version is not None:
            return self._scan(self.idx_model(q.model_version), lo, hi)
        if q.state in (FAILED, CANCELLED):
            return self._scan(self.idx_state(q.state), lo, hi)
        if q.state == STARTED:
            return self._in_flight(lo, hi)
        keys = [self.idx_workflow(wf, ver) for wf, ver in self.workflow_versions()
                if (q.workflow is None or wf == q.workflow) and (q.version is None or ver == q.version)]
        return heapq.merge(*(self._scan(k, lo, hi) for k in keys), key=lambda x: -x[0])

    def _scan(self, key: str, lo: float, hi: float) -> Iterator[tuple[float, str]]:
        """Members of one index with a score in [lo, hi], newest first, by pages."""
        top: float | str = hi
        skip = 0
        while True:
            rows: Any = self._r.zrevrangebyscore(key, top, lo, start=skip, num=PAGE, withscores=True)
            if not rows:
                return
            for member, score in rows:
                yield float(score), _s(member)
            if len(rows) < PAGE:
                return
            last = rows[-1][1]
            ties = sum(1 for _, sc in rows if sc == last)  # members at the page's edge
            skip = skip + ties if last == top else ties
            top = last

    def _in_flight(self, lo: float, hi: float) -> Iterator[tuple[float, str]]:
        raw: Any = self._r.zrange(self._k.runs_inflight(), 0, -1)
        ids = [_s(x) for x in raw]
        pipe = self._r.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._k.run(rid), "started_at")
        rows = [(float(_s(v)), rid) for rid, v in zip(ids, pipe.execute(), strict=True) if v]
        return iter(sorted(((s, r) for s, r in rows if lo <= s <= hi), reverse=True))

    # -- one run ---------------------------------------------------------------------
    def show(self, run_id: str) -> RunDetail | None:
        """Everything the ledger knows of one run, step by step, in canvas order."""
        rec = RunLedger(self._r, self._k, self.settings).get(run_id)
        if rec is None:
            return None
        memo: Any = self._r.hgetall(self._k.run_memo(run_id))
        memo = {_s(k): _s(v) for k, v in memo.items()}
        try:
            cause = json.loads(rec.get("fields", "{}"))
        except ValueError:
            cause = {}
        extra = {k: rec[k] for k in ("retries", "redrives_total", "dlq_id", "trace", "resume_of",
                                     "coalesced", "unregistered", "running", "held")
                 if rec.get(k) not in (None, "", "0")}
        return RunDetail(RunSummary.of(run_id, rec), list(step_rows(rec, memo)),
                         {str(k): str(v) for k, v in cause.items()} if isinstance(cause, dict) else {},
                         extra)


def step_rows(rec: dict[str, str], memo: dict[str, str]) -> Iterable[StepRow]:
    for entry in RunLedger.steps_of(rec):
        step, task, kind = [*entry, "", "", ""][:3]
        first, last, end, attempts, state = (rec.get(f"x:{step}", "") + "||||").split("|")[:5]
        if not state:
            state = "memoized" if step in memo and memo[step] != NOT_KEPT else "pending"
        t0 = float(rec.get("started_at") or 0)
        yield StepRow(step, task, kind, state, int(attempts or 0), _at(t0, first),
                      _at(t0, last), _at(t0, end), rec.get(f"e:{step}", ""),
                      rec.get(f"w:{step}", ""))


def _at(t0: float, ms: str) -> float | None:
    """Unix time of a step's ``x:`` offset (milliseconds after the run's start)."""
    return round(t0 + int(ms) / 1000, 3) if ms else None


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
