"""One read of every declared limit (for ``mesh status`` and ``mesh exporter``): each
rate limit's use of its window, waiting steps, the oldest wait against its SLA, and
each concurrency name's running and waiting steps. Expired entries are swept as a side
effect (the same sweep every admission does)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from worker_mesh.mesh.flow.concurrency import ConcurrencyLimiter
from worker_mesh.mesh.flow.limits import RateLimiter
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings.flow import FlowSettings

if TYPE_CHECKING:
    import redis


def snapshot(client: redis.Redis, keys: Keys, settings: FlowSettings,
             now: float | None = None) -> dict[str, Any]:
    rates = RateLimiter(client, keys, settings)
    leases = ConcurrencyLimiter(client, keys, settings)
    limits: list[dict[str, Any]] = []
    for name in sorted(settings.limits):
        rate: dict[str, Any] = dict(rates.status(name, now=now))
        rate["over_sla"] = rate["oldest_wait_s"] > rate["wait_sla_s"]
        limits.append(rate)
    concurrency: list[dict[str, Any]] = []
    for name in sorted(settings.concurrency):
        conc: dict[str, Any] = dict(leases.status(name, now=now))
        conc["wait_sla_s"] = settings.concurrency_wait_sla_s
        conc["over_sla"] = conc["oldest_wait_s"] > settings.concurrency_wait_sla_s
        concurrency.append(conc)
    return {"taken_at": time.time() if now is None else now, "limits": limits,
            "concurrency": concurrency}
