"""Per-workflow run statistics in Redis: successes, failures, retries, durations and
the time of the last success (the freshness every SLA alert and `mesh status` read).

A run is counted once, however often its final callback is redelivered: the first
``finished`` call for a run id wins (SET NX marker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from mesh.keys import Keys

DURATIONS_KEPT = 2000
MARKER_TTL_S = 7 * 86_400


@dataclass(frozen=True)
class WorkflowStats:
    workflow: str
    successes: int
    failures: int
    retries: int
    p50_s: float | None
    p95_s: float | None
    last_success_ts: float | None

    @property
    def runs(self) -> int:
        return self.successes + self.failures


class RunStats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._r = client
        self._k = keys

    def _stats(self, workflow: str) -> str:
        return self._k.ns("runs", "stats", workflow)

    def _durations(self, workflow: str) -> str:
        return self._k.ns("runs", "durations", workflow)

    @property
    def _last_success(self) -> str:
        return self._k.ns("runs", "last_success")

    def finished(self, workflow: str, run_id: str, started_at: float, *, ok: bool,
                 now: float | None = None) -> bool:
        """Record the end of a run; returns False when it was already recorded."""
        now = time.time() if now is None else now
        if not self._r.set(self._k.ns("runs", "done", run_id), "1" if ok else "0",
                           nx=True, ex=MARKER_TTL_S):
            return False
        pipe = self._r.pipeline(transaction=True)
        pipe.hincrby(self._stats(workflow), "successes" if ok else "failures", 1)
        if ok:
            pipe.lpush(self._durations(workflow), f"{max(now - started_at, 0.0):.6f}")
            pipe.ltrim(self._durations(workflow), 0, DURATIONS_KEPT - 1)
            pipe.hset(self._last_success, workflow, f"{now:.3f}")
        pipe.execute()
        return True

    def retried(self, workflow: str) -> None:
        self._r.hincrby(self._stats(workflow), "retries", 1)

    def last_success(self) -> dict[str, float]:
        raw: dict[Any, Any] = self._r.hgetall(self._last_success)  # type: ignore[assignment]
        return {_text(k): float(v) for k, v in raw.items()}

    def get(self, workflow: str) -> WorkflowStats:
        counts: dict[Any, Any] = self._r.hgetall(self._stats(workflow))  # type: ignore[assignment]
        raw = {_text(k): int(v) for k, v in counts.items()}
        durs = sorted(float(x) for x in self._r.lrange(self._durations(workflow), 0, -1))
        last = self._r.hget(self._last_success, workflow)
        return WorkflowStats(
            workflow, raw.get("successes", 0), raw.get("failures", 0), raw.get("retries", 0),
            _pct(durs, 0.50), _pct(durs, 0.95), float(last) if last else None,
        )


def record_success(client: redis.Redis, keys: Keys, meta: dict[str, Any], started_at: float) -> bool:
    """A run's success (every step succeeded): stats and the ``succeeded`` metric, once
    per run. Called by the run's last task (``workers.kinds``) or by the bookkeeping
    task ``mesh.run.finished``; returns False when the run was already recorded."""
    from monitoring import metrics

    first = RunStats(client, keys).finished(meta["workflow"], meta["run_id"], started_at, ok=True)
    if first:
        metrics.workflow_run(meta["workflow"], "succeeded")
    return first


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]
