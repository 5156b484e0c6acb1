"""Reconciling published vs accounted entries, per partition stream.

``published`` is the stream's ``entries-added`` (every XADD ever, trimming does not
lower it); ``accounted`` is the sum of the recorded outcomes; ``in_flight`` is what
the consumer group has not finished: pending (read, not acknowledged) plus lag (not
read yet). A stream is consistent when ``published == accounted + in_flight``; it is
settled when, in addition, nothing is in flight.

Past the Celery hand-off, the run ledger (``mesh.runs``) is reconciled the same way:
``started == succeeded + failed + cancelled + in flight``, and no run in flight may be
past its re-drive deadline by more than two re-drive intervals (``overdue``: neither
finished nor legitimately in flight - the re-driver is not running, or cannot send).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import redis

from worker_mesh.events.outcomes import by_type, totals
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import OUTCOMES, RunLedger
from worker_mesh.mesh.settings import MeshSettings


@dataclass(frozen=True)
class StreamAudit:
    stream: str
    published: int
    accounted: int
    pending: int
    lag: int
    outcomes: dict[str, int]
    by_type: dict[str, dict[str, int]]

    @property
    def in_flight(self) -> int:
        return self.pending + self.lag

    @property
    def consistent(self) -> bool:
        return self.published == self.accounted + self.in_flight

    @property
    def settled(self) -> bool:
        return self.consistent and self.in_flight == 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(in_flight=self.in_flight, consistent=self.consistent, settled=self.settled)
        return d


def _get(d: dict[Any, Any], name: str) -> Any:
    return d.get(name, d.get(name.encode()))


def audit_stream(client: redis.Redis, keys: Keys, settings: MeshSettings, partition: int) -> StreamAudit:
    stream = keys.stream(partition)
    published = pending = lag = 0
    try:
        info = client.xinfo_stream(stream)
        published = int(_get(info, "entries-added") or 0)
        for g in client.xinfo_groups(stream):
            name = _get(g, "name")
            name = name.decode() if isinstance(name, bytes) else name
            if name != settings.dispatcher.group:
                continue
            pending = int(_get(g, "pending") or 0)
            raw_lag = _get(g, "lag")
            if raw_lag is None:  # undeterminable (entries deleted): use entries-read
                read = _get(g, "entries-read")
                raw_lag = published - int(read) if read is not None else published - pending
            lag = int(raw_lag)
            break
        else:
            lag = published  # no group yet: nothing was read
    except redis.ResponseError:  # no such stream
        pass
    raw = client.hgetall(keys.outcomes(partition))
    counts = totals(raw)
    return StreamAudit(stream, published, sum(counts.values()), pending, lag, counts, by_type(raw))


@dataclass(frozen=True)
class RunAudit:
    """The run ledger reconciled: every started run ended once, or is in flight."""

    started: int
    succeeded: int
    failed: int
    cancelled: int
    in_flight: int
    overdue: int
    redriven: int
    oldest: list[dict[str, Any]]
    """The runs in flight closest to (or past) their deadline: age, last finished step."""

    @property
    def consistent(self) -> bool:
        return self.started == self.succeeded + self.failed + self.cancelled + self.in_flight

    @property
    def ok(self) -> bool:
        return self.consistent and self.overdue == 0

    @property
    def settled(self) -> bool:
        return self.consistent and self.in_flight == 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(consistent=self.consistent, ok=self.ok, settled=self.settled)
        return d


def audit_runs(client: redis.Redis, settings: MeshSettings, *, limit: int = 20) -> RunAudit:
    ledger = RunLedger(client, Keys(settings.redis.key_prefix), settings.runs)
    counts = ledger.counts()
    succeeded, failed, cancelled = (counts.get(o, 0) for o in OUTCOMES)
    return RunAudit(
        counts.get("started", 0), succeeded, failed, cancelled,
        in_flight=ledger.in_flight_count(),
        overdue=ledger.overdue_count(grace_s=2 * settings.runs.redrive_interval_s),
        redriven=counts.get("redriven", 0), oldest=ledger.in_flight(limit))


def audit(client: redis.Redis, settings: MeshSettings) -> list[StreamAudit]:
    keys = Keys(settings.redis.key_prefix)
    return [audit_stream(client, keys, settings, p) for p in range(settings.streams.partitions)]
