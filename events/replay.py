"""Replay by query: re-send the events that caused a selection of runs (or every
recorded event of a time range: a backfill) as new stream entries, so that the
dispatcher handles them like any event: validation, dedupe, coalescing, the run
ledger, ``mesh audit``.

Selection:

* **runs** (``from_runs``): the runs matching a ``RunQuery`` (workflow, version,
  state, entity, model version, failed-at step, time range; ``mesh.runs_history``);
  each run's cause event is on its ledger record. Runs of one event count once.
* **backfill** (``from_streams``): the entries of the event streams between two
  times (stream ids are milliseconds) that route to the workflow.

Sending reuses the dead-letter replay's grant (``events.dlq``): one grant per replay,
``keys.replay_grant(<id>)`` = ``{"route": <workflow>}``, written before the first entry;
every entry carries ``replay=<id>`` and ``route=<workflow>``. The dispatcher honours
those fields only when the grant exists, so producers cannot forge a replay; the
replay id makes each event a new attempt (new idempotency key and run id: not taken
for a duplicate of the original) and ``route`` re-runs only the named workflow.
Entries go to the partition stream of their entity key, oldest first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from worker_mesh.events.catalog import CATALOG, EventCatalog
from worker_mesh.events.dlq import GRANT_TTL_S
from worker_mesh.events.routing import Router
from worker_mesh.events.wire import decode
from worker_mesh.mesh.errors import MeshError
from worker_mesh.mesh.keys import Keys, partition_of
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.runs_history import RunHistory, RunQuery
from worker_mesh.mesh.settings import MeshSettings

REPLAY_FIELDS = ("replay", "route")


@dataclass
class ReplayPlan:
    """What a replay would send (``count`` is the dry run's answer)."""

    workflow: str
    events: list[dict[str, str]] = field(default_factory=list)
    """Wire fields of each event to send, oldest first."""
    runs: int = 0
    """Runs (or stream entries) matched."""
    missing: list[str] = field(default_factory=list)
    """Runs whose cause event is not recorded (their record lacks it)."""
    replay_id: str = field(default_factory=lambda: "q-" + uuid.uuid4().hex)

    @property
    def count(self) -> int:
        return len(self.events)

    def as_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "replay_id": self.replay_id, "events": self.count,
                "runs_matched": self.runs, "missing_cause": self.missing}


class Replayer:
    def __init__(self, client: redis.Redis, settings: MeshSettings, keys: Keys) -> None:
        self._r = client
        self._s = settings
        self._k = keys
        self._history = RunHistory(client, keys, settings.runs)
        self._ledger = RunLedger(client, keys, settings.runs)

    # -- selecting -------------------------------------------------------------------
    def from_runs(self, workflow: str, q: RunQuery, *, latest_per_entity: bool = False) -> ReplayPlan:
        """The cause events of the runs matching ``q`` (``q.workflow`` is ``workflow``)."""
        plan = ReplayPlan(workflow)
        picked: list[dict[str, str]] = []
        seen_events: set[str] = set()
        seen_entities: set[str] = set()
        for summary in self._history.iter(q):  # newest first
            plan.runs += 1
            if summary.event_id in seen_events:
                continue
            if latest_per_entity and summary.entity and summary.entity in seen_entities:
                continue
            fields = self._cause(summary.run_id)
            if fields is None:
                plan.missing.append(summary.run_id)
                continue
            if summary.entity and "key" not in fields:
                fields["key"] = summary.entity  # the partition of the entity, as before
            seen_events.add(summary.event_id)
            seen_entities.add(summary.entity)
            picked.append(fields)
        plan.events = picked[::-1]
        return plan

    def _cause(self, run_id: str) -> dict[str, str] | None:
        raw = self._ledger.get_field(run_id, "fields")
        try:
            fields = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(fields, dict) or not fields.get("type"):
            return None
        return {str(k): str(v) for k, v in fields.items() if k not in REPLAY_FIELDS}

    def from_streams(self, workflow: str, router: Router, since_ms: int, until_ms: int,
                     catalog: EventCatalog = CATALOG) -> ReplayPlan:
        """Backfill: every recorded event between ``since_ms`` and ``until_ms`` (stream
        entry times) that routes to ``workflow``, once per event id, oldest first.
        Entries that were themselves replays are the same events: counted once."""
        plan = ReplayPlan(workflow)
        seen: set[str] = set()
        rows: list[tuple[str, dict[str, str]]] = []
        for p in range(self._s.streams.partitions):
            for eid, fields in self._entries(self._k.stream(p), since_ms, until_ms):
                rows.append((eid, fields))
        rows.sort(key=lambda r: tuple(int(x) for x in r[0].split("-")))
        for _, fields in rows:
            raw = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in fields.items()
                   if k not in REPLAY_FIELDS}
            try:
                env = decode(raw, self._s.streams.max_payload_bytes, catalog)
                routes = router.route(env)
            except MeshError:  # an invalid entry: it was dead-lettered back then
                continue
            except Exception:  # a workflow's filter raised: it was not routed then either
                continue
            if not any(r.workflow == workflow for r in routes) or env.event_id in seen:
                continue
            plan.runs += 1
            seen.add(env.event_id)
            plan.events.append({k: v for k, v in fields.items() if k not in REPLAY_FIELDS}
                               | {"key": env.entity_key})
        return plan

    def _entries(self, stream: str, since_ms: int, until_ms: int) -> Iterator[tuple[str, dict[str, str]]]:
        start = f"{since_ms}-0"
        while True:
            with translate_errors("replay backfill"):
                rows = cast(Any, self._r.xrange(stream, min=start, max=f"{until_ms}-18446744073709551615",
                                                count=500))
            if not rows:
                return
            for eid, raw in rows:
                yield _s(eid), {_s(k): _s(v) for k, v in raw.items()}
            start = "(" + _s(rows[-1][0])

    # -- sending ---------------------------------------------------------------------
    def grant(self, plan: ReplayPlan) -> None:
        """Write the replay's grant (before any entry that refers to it)."""
        with translate_errors("replay grant"):
            self._r.set(self._k.replay_grant(plan.replay_id),
                        json.dumps({"route": plan.workflow, "resume_of": "", "query": True}),
                        ex=GRANT_TTL_S)

    def send(self, plan: ReplayPlan, events: Sequence[dict[str, str]]) -> list[str]:
        """Append ``events`` (a slice of ``plan.events``) in one pipelined round trip;
        returns the new entry ids."""
        parts = self._s.streams.partitions
        with translate_errors("replay send"):
            pipe = self._r.pipeline(transaction=False)
            for fields in events:
                key = fields.get("key", "")
                stream = self._k.stream(partition_of(key, parts) if key else 0)
                entry = {**fields, "replay": plan.replay_id, "route": plan.workflow}
                pipe.xadd(stream, entry, maxlen=self._s.streams.maxlen_approx,  # type: ignore[arg-type]
                          approximate=True)
            pipe.hincrby(self._k.dlq_outcomes, "replayed_by_query", len(events))
            ids = pipe.execute()[:-1]
        return [_s(i) for i in ids]

    def backlog(self) -> int:
        """Entries the dispatchers have not finished (pending + lag, every partition):
        what a throttled replay waits on so live traffic keeps its SLA."""
        total = 0
        for p in range(self._s.streams.partitions):
            try:
                groups: Any = self._r.xinfo_groups(self._k.stream(p))
            except redis.ResponseError:
                continue
            for g in groups:
                name = _s(g.get("name", g.get(b"name", b"")))
                if name == self._s.dispatcher.group:
                    total += int(g.get("pending", 0) or 0) + int(g.get("lag", 0) or 0)
        return total


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
