"""The dead-letter stream: events that could not (or should not) run, kept with a
reason and their original wire fields so that an operator can replay them after a fix.

One Redis stream, ``keys.dlq``. Each entry holds:

===========  ===========================================================================
field        value
===========  ===========================================================================
reason_code  short bounded category (metrics label): ``invalid``, ``unknown_type``,
             ``too_large``, ``poison``, ``trimmed``, ``build_failed``,
             ``workflow_failed``, ``quality_failed``...
reason       readable sentence (names the offending field where there is one)
source       who dead-lettered it: ``dispatcher``, ``mesh.dlq.workflow_failed``, a task
type         the event type as found in the fields (may be empty for garbage entries)
stream       the event stream the entry came from (where replay sends it back)
entry_id     the entry's id in that stream
deliveries   how many times the dispatcher had read it
error        the last error (workflow failures), truncated
workflow     the one workflow that failed (``workflow_failed``, ``build_failed``), else
             empty; a replay then re-runs only that workflow
run_id       the failed run (``workflow_failed``, ``stuck``): a replay resumes it at the
             failed step (steps that succeeded are not run again) unless ``--from-start``
step         the step the run failed or got stuck at
at_ms        when it was dead-lettered (Unix ms)
fields       the original wire fields, one JSON object of strings
===========  ===========================================================================

Replay re-appends the original fields (plus ``replay=<dlq id>``, so that dedupe and
run ids treat it as a new attempt, not a duplicate, and ``route=<workflow>`` when the
dead letter names the one workflow that failed) to the partition stream of its
entity key, and deletes the DLQ entry, in one Lua script (atomic: a concurrent
second replay of the same id finds nothing to replay). The same script writes the
replay *grant* (``keys.replay_grant``): the dispatcher honours ``replay``/``route``
fields only when the grant of that dead letter exists, so a producer cannot forge a
replay (to bypass dedupe) or a route (to drop an event). The grant says which failed
run to resume.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from worker_mesh.mesh import redact
from worker_mesh.mesh.keys import Keys, partition_of
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings import StreamSettings

MAX_REASON_CHARS = 2000
MAX_ERROR_CHARS = 4000

# KEYS: dlq, target stream, dlq outcomes, replay grant.
# ARGV: dlq id, maxlen, grant value, grant ttl (s), field, value, ...
_REPLAY_LUA = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
local fv = {}
for i = 5, #ARGV do fv[#fv + 1] = ARGV[i] end
redis.call('SET', KEYS[4], ARGV[3], 'EX', tonumber(ARGV[4]))
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fv))
redis.call('HINCRBY', KEYS[3], 'replayed', 1)
return id
"""
GRANT_TTL_S = 7 * 86_400
"""How long a replayed entry may wait in its stream before its grant expires."""


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    id: str
    reason_code: str
    reason: str
    source: str
    type: str
    stream: str
    entry_id: str
    deliveries: int | None
    error: str
    at_ms: int
    fields: dict[str, str]
    workflow: str = ""
    run_id: str = ""
    step: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "reason_code": self.reason_code, "reason": self.reason,
            "run_id": self.run_id, "step": self.step,
            "source": self.source, "type": self.type, "stream": self.stream,
            "entry_id": self.entry_id, "deliveries": self.deliveries, "error": self.error,
            "at_ms": self.at_ms, "fields": self.fields, "workflow": self.workflow,
        }


@dataclass
class ReplayResult:
    """What a replay did: DLQ id -> new stream entry id, and the ids it skipped."""

    replayed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    """Ids not (or no longer) in the dead-letter stream."""

    @property
    def count(self) -> int:
        return len(self.replayed)


class DeadLetters:
    """Adds to, lists and replays the dead-letter stream. Redis is passed in."""

    def __init__(self, client: redis.Redis, keys: Keys, streams: StreamSettings) -> None:
        self._r = client
        self._keys = keys
        self._streams = streams
        self._replay = client.register_script(_REPLAY_LUA)

    # -- writing ---------------------------------------------------------------------
    def entry(self, reason_code: str, reason: str, fields: Mapping[str, str], *, source: str,
              stream: str | None = None, entry_id: str | None = None,
              deliveries: int | None = None, error: str | None = None,
              workflow: str | None = None, run_id: str = "", step: str = "") -> dict[str, str]:
        """The DLQ stream fields for one dead letter (used by ``add`` and by the
        dispatcher, which queues them on its own MULTI with the XACK).

        ``reason`` and ``error`` pass the redaction point (``mesh.redact``): an error may
        quote a provider's body that echoes a key. ``fields`` are kept as published:
        replay must re-send exactly what the producer sent."""
        return {
            "reason_code": reason_code[:64],
            "reason": redact.text(reason)[:MAX_REASON_CHARS],
            "source": source[:128],
            "type": str(fields.get("type", ""))[:128],
            "stream": stream or "",
            "entry_id": entry_id or "",
            "deliveries": "" if deliveries is None else str(deliveries),
            "error": redact.text(error or "")[:MAX_ERROR_CHARS],
            "at_ms": str(int(time.time() * 1000)),
            "workflow": (workflow or "")[:128],
            "run_id": run_id[:64],
            "step": step[:128],
            "fields": json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":")),
        }

    def queue(self, pipe: redis.client.Pipeline, dlq_fields: Mapping[str, str]) -> None:
        """Queue one XADD of ``entry(...)`` on ``pipe``."""
        pipe.xadd(self._keys.dlq, dict(dlq_fields),  # type: ignore[arg-type]
                  maxlen=self._streams.dlq_maxlen_approx, approximate=True)

    def add(self, reason_code: str, reason: str, fields: Mapping[str, str], *, source: str,
            stream: str | None = None, entry_id: str | None = None,
            deliveries: int | None = None, error: str | None = None,
            workflow: str | None = None, run_id: str = "", step: str = "") -> str:
        """Dead-letter one event; returns the DLQ entry id.

        ``fields`` are the event's original wire fields (``events.wire``), so that it
        can be replayed; ``workflow`` names the one workflow to re-run on replay
        (None: every workflow the event routes to). Raises BrokerUnavailable when Redis is unreachable.
        """
        data = self.entry(reason_code, reason, fields, source=source, stream=stream,
                          entry_id=entry_id, deliveries=deliveries, error=error,
                          workflow=workflow, run_id=run_id, step=step)
        with translate_errors("dead-letter"):
            new_id: Any = self._r.xadd(self._keys.dlq, data,  # type: ignore[arg-type]
                                  maxlen=self._streams.dlq_maxlen_approx, approximate=True)
        from worker_mesh.monitoring import metrics

        metrics.dead_lettered(reason_code, event_type=str(fields.get("type", "unknown")))
        return _s(new_id)

    # -- reading ---------------------------------------------------------------------
    def list(self, *, limit: int = 100, type_name: str | None = None) -> list[DeadLetter]:
        """Oldest first, at most ``limit``, optionally only events of one type."""
        out: list[DeadLetter] = []
        start = "-"
        with translate_errors("dlq list"):
            while len(out) < limit:
                rows = cast(Any, self._r.xrange(self._keys.dlq, min=start, count=max(limit, 200)))
                if not rows:
                    break
                for rid, raw in rows:
                    dl = _parse(_s(rid), raw)
                    if type_name is None or dl.type == type_name:
                        out.append(dl)
                        if len(out) >= limit:
                            break
                start = "(" + _s(rows[-1][0])
        return out

    def count(self) -> int:
        with translate_errors("dlq count"):
            return int(self._r.xlen(self._keys.dlq))

    def get(self, dlq_id: str) -> DeadLetter | None:
        with translate_errors("dlq get"):
            rows = cast(Any, self._r.xrange(self._keys.dlq, min=dlq_id, max=dlq_id, count=1))
        return _parse(_s(rows[0][0]), rows[0][1]) if rows else None

    # -- replay ----------------------------------------------------------------------
    def replay(self, ids: Sequence[str] | None = None, *, type_name: str | None = None,
               all_: bool = False, from_start: bool = False) -> ReplayResult:
        """Re-append dead-lettered events to their partition streams and remove them
        from the dead-letter stream (atomically per entry). Select by ``ids``, by
        ``type_name``, or ``all_``; exactly one of them. A failed run is resumed at
        its failed step (its succeeded steps are not run again) unless ``from_start``."""
        chosen = sum(x for x in (ids is not None, type_name is not None, all_))
        if chosen != 1:
            raise ValueError("give exactly one of ids, type_name or all_")
        result = ReplayResult()
        if ids is not None:
            targets: builtins.list[DeadLetter] = []
            for i in ids:
                dl = self.get(i)
                if dl is None:
                    result.missing.append(i)
                else:
                    targets.append(dl)
        else:
            targets = self._select(type_name)
        for dl in targets:
            new_id = self._replay_one(dl, from_start)
            if new_id is None:
                result.missing.append(dl.id)
            else:
                result.replayed[dl.id] = new_id
        return result

    def _select(self, type_name: str | None) -> builtins.list[DeadLetter]:
        out: builtins.list[DeadLetter] = []
        start = "-"
        with translate_errors("dlq replay"):
            while True:
                rows = cast(Any, self._r.xrange(self._keys.dlq, min=start, count=500))
                if not rows:
                    return out
                for rid, raw in rows:
                    dl = _parse(_s(rid), raw)
                    if type_name is None or dl.type == type_name:
                        out.append(dl)
                start = "(" + _s(rows[-1][0])

    def target_stream(self, dl: DeadLetter) -> str:
        """The partition stream of the entity key (partitions may have changed since),
        else the stream it came from, else partition 0."""
        key = dl.fields.get("key")
        if key:
            return self._keys.stream(partition_of(key, self._streams.partitions))
        valid = {self._keys.stream(p) for p in range(self._streams.partitions)}
        return dl.stream if dl.stream in valid else self._keys.stream(0)

    def _replay_one(self, dl: DeadLetter, from_start: bool) -> str | None:
        fields = {k: v for k, v in dl.fields.items() if k not in ("replay", "route")}
        fields["replay"] = dl.id
        if dl.workflow:
            fields["route"] = dl.workflow
        grant = json.dumps({"route": dl.workflow,
                            "resume_of": "" if from_start else dl.run_id})
        argv: list[str | int] = [dl.id, self._streams.maxlen_approx, grant, GRANT_TTL_S]
        for k, v in fields.items():
            argv += [k, v]
        with translate_errors("dlq replay"):
            new_id = self._replay(keys=[self._keys.dlq, self.target_stream(dl),
                                        self._keys.dlq_outcomes, self._keys.replay_grant(dl.id)],
                                  args=argv)
        return None if new_id is None else _s(new_id)

    def grant(self, dlq_id: str) -> dict[str, str] | None:
        """The replay grant of a dead letter (written by ``replay``), or None."""
        with translate_errors("replay grant"):
            raw: Any = self._r.get(self._keys.replay_grant(dlq_id))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    def replayed_total(self) -> int:
        with translate_errors("dlq stats"):
            raw: Any = self._r.hget(self._keys.dlq_outcomes, "replayed")
        return int(raw or 0)


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)


def _parse(rid: str, raw: Mapping[bytes | str, bytes | str]) -> DeadLetter:
    f = {_s(k): _s(v) for k, v in raw.items()}
    try:
        fields = json.loads(f.get("fields", "{}"))
        if not isinstance(fields, dict):
            fields = {}
    except ValueError:
        fields = {}
    deliveries = f.get("deliveries", "")
    return DeadLetter(
        id=rid, reason_code=f.get("reason_code", ""), reason=f.get("reason", ""),
        source=f.get("source", ""), type=f.get("type", ""), stream=f.get("stream", ""),
        entry_id=f.get("entry_id", ""),
        deliveries=int(deliveries) if deliveries.isdigit() else None,
        error=f.get("error", ""), at_ms=int(f.get("at_ms", "0") or 0),
        fields={str(k): str(v) for k, v in fields.items()},
        workflow=f.get("workflow", ""), run_id=f.get("run_id", ""), step=f.get("step", ""),
    )
