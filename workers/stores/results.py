"""Latest results per entity in Redis (``Keys.result(kind, entity)``, one hash each).

Churn scores are written idempotently, keyed by the entity and the *version* of what
was scored: ``(profile revision, model promotion seq)``. A write only lands if its
version is newer than the stored one, so

* a redelivered task (same version) does not write twice (``duplicate``),
* a late task that scored an older profile, or with an older promotion, does not move
  the result backwards (``stale``),
* a rescore after a promotion (same profile, higher seq) replaces the score (``written``).

The previous score is kept with each write, so a caller can tell whether the score just
*crossed* a threshold, also when it is told ``duplicate`` (a task that died after the
write but before publishing the alert publishes it on redelivery).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.monitoring import metrics

_WRITE = """
local k = KEYS[1]
local rev, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur_rev = tonumber(redis.call('HGET', k, 'profile_revision') or '-1')
local cur_seq = tonumber(redis.call('HGET', k, 'model_seq') or '-1')
if rev < cur_rev or (rev == cur_rev and seq < cur_seq) then
  return {'stale', redis.call('HGET', k, 'score') or '', redis.call('HGET', k, 'alerted') or ''}
end
if rev == cur_rev and seq == cur_seq then
  return {'duplicate', redis.call('HGET', k, 'prev_score') or '', redis.call('HGET', k, 'alerted') or ''}
end
local prev = redis.call('HGET', k, 'score') or ''
local fields = cjson.decode(ARGV[3])
redis.call('HDEL', k, 'alerted')
for f, v in pairs(fields) do redis.call('HSET', k, f, v) end
redis.call('HSET', k, 'prev_score', prev)
return {'written', prev, ''}
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class WriteOutcome:
    status: str
    """``written``, ``duplicate`` (this version was stored before) or ``stale``."""
    prev_score: float | None
    """The score before this version was written (for ``stale``: the stored score)."""
    alerted: str
    """Idempotency key of the high-risk alert already published for this version."""


class ChurnResults:
    KIND = "churn"

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._write = client.register_script(_WRITE)

    def key(self, customer_id: str) -> str:
        return self.keys.result(self.KIND, customer_id)

    def write(self, customer_id: str, *, score: float, profile_revision: int, model_version: str,
              model_seq: int, meta: dict[str, Any], event_id: str,
              extra: dict[str, Any] | None = None) -> WriteOutcome:
        """Store a score with everything needed to trace it: model version, workflow
        and its version, run id and the id of the event that caused it."""
        fields = {
            "customer_id": customer_id,
            "score": repr(float(score)),
            "profile_revision": str(profile_revision),
            "model_version": model_version,
            "model_seq": str(model_seq),
            "workflow": str(meta.get("workflow", "")),
            "workflow_version": str(meta.get("workflow_version", "")),
            "run_id": str(meta.get("run_id", "")),
            "event_id": event_id,
            "scored_at": repr(time.time()),
        }
        if extra:
            fields["extra"] = json.dumps(extra, sort_keys=True)
        with translate_errors("result store"):
            status, prev, alerted = self._write(
                keys=[self.key(customer_id)],
                args=[profile_revision, model_seq, json.dumps(fields)])
        status = status.decode() if isinstance(status, bytes) else status
        prev = prev.decode() if isinstance(prev, bytes) else prev
        alerted = alerted.decode() if isinstance(alerted, bytes) else alerted
        if status == "written":
            metrics.result_updated(self.KIND, customer_id)
        return WriteOutcome(status, float(prev) if prev else None, alerted)

    def write_many(self, rows: list[dict[str, Any]], meta: dict[str, Any],
                   event_id: str) -> list[WriteOutcome]:
        """Batch form of ``write`` (one pipelined round trip): rows have customer_id,
        score, profile_revision, model_version, model_seq."""
        now = repr(time.time())
        with translate_errors("result store"):
            pipe = self.client.pipeline(transaction=False)
            for row in rows:
                fields = {
                    "customer_id": row["customer_id"], "score": repr(float(row["score"])),
                    "profile_revision": str(row["profile_revision"]),
                    "model_version": row["model_version"], "model_seq": str(row["model_seq"]),
                    "workflow": str(meta.get("workflow", "")),
                    "workflow_version": str(meta.get("workflow_version", "")),
                    "run_id": str(meta.get("run_id", "")), "event_id": event_id, "scored_at": now,
                }
                self._write(keys=[self.key(row["customer_id"])],
                            args=[row["profile_revision"], row["model_seq"], json.dumps(fields)],
                            client=pipe)
            replies = pipe.execute()
        out = []
        for row, (status, prev, alerted) in zip(rows, replies, strict=True):
            s, p, a = (x.decode() if isinstance(x, bytes) else x for x in (status, prev, alerted))
            if s == "written":
                metrics.result_updated(self.KIND, row["customer_id"])
            out.append(WriteOutcome(s, float(p) if p else None, a))
        return out

    def mark_alerted(self, customer_id: str, profile_revision: int, model_seq: int, key: str) -> None:
        """Remember that the alert of this version was published (only if the stored
        result is still this version)."""
        with translate_errors("result store"):
            self.client.eval(
                "if redis.call('HGET', KEYS[1], 'profile_revision') == ARGV[1] and "
                "redis.call('HGET', KEYS[1], 'model_seq') == ARGV[2] then "
                "redis.call('HSET', KEYS[1], 'alerted', ARGV[3]) return 1 end return 0",
                1, self.key(customer_id), str(profile_revision), str(model_seq), key)

    def get(self, customer_id: str) -> dict[str, Any] | None:
        with translate_errors("result store"):
            raw = self.client.hgetall(self.key(customer_id))
        if not raw:
            return None
        out: dict[str, Any] = {_s(k): _s(v) for k, v in raw.items()}
        out["score"] = float(out["score"])
        out["profile_revision"] = int(out["profile_revision"])
        out["model_seq"] = int(out["model_seq"])
        out["prev_score"] = float(out["prev_score"]) if out.get("prev_score") else None
        return out
