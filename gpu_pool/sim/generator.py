"""A seeded, realistic week of GPU work for a B2B SaaS (the default trace).

The company: a European B2B SaaS whose customers edit a knowledge base during office
hours. Each parameter below says what it stands for and where its value comes from;
none of them is tuned to make a strategy look good (the simulator is meant to be run
on recorded traces: ``mesh gpu trace record``). Change them with ``mesh gpu trace
generate --param NAME=VALUE`` and see the effect in ``mesh gpu simulate``.

Urgent work (``gpu``): one line per minute, items Poisson around the minute's rate,
spread over the minute; plus bursts. Bulk work (``gpu-batch``): a nightly
re-embedding, daytime imports, same-day imports with a deadline, the weekly
retrain's rescoring of every customer.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from worker_mesh.gpu_pool.sim.trace import Record

HOURLY = (0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.20, 0.60, 0.90, 1.00, 1.00,
          0.80, 0.90, 1.00, 0.95, 0.85, 0.60, 0.35, 0.20, 0.12, 0.08, 0.04, 0.02)
"""Urgent rate by local hour as a share of the peak: office hours 08-18 with a lunch
dip, an evening tail, and a 1% night floor (integrations syncing content and users
in other time zones never stop entirely). The shape of an office-hours product."""

WEEKDAY = (1.0, 1.0, 1.0, 1.0, 0.95, 0.15, 0.10)
"""Monday..Sunday factor: a B2B product is quiet at weekends."""


@dataclass(frozen=True)
class GeneratorParams:
    seed: int = 15
    """Random seed: the same seed gives the same trace, byte for byte."""
    start: str = "2026-03-02T00:00:00+00:00"
    """Monday 00:00 UTC of the week (a week without a DST change)."""
    days: int = 7
    zone: str = "Europe/Berlin"
    """Where the customers' office hours are (``HOURLY`` is local time there)."""
    urgent_peak_items_per_s: float = 20.0
    """Changed chunks per second at the weekday peak: ~600 people editing at once,
    one save every 2 minutes, ~4 changed chunks a save (the re-embedding workflow
    embeds only changed chunks of 800 characters)."""
    urgent_noise: float = 0.15
    """Hour-to-hour lognormal spread of the rate (sigma): days are not identical."""
    bursts_per_weekday: float = 8.0
    """A customer's bulk edit (find-and-replace, a re-organised space) coalesced into
    many changed chunks at once: Poisson count per weekday, during office hours."""
    burst_median_items: float = 1500.0
    """Lognormal median size of a burst (sigma 0.8), spread over 1-10 minutes."""
    nightly_items: int = 900_000
    """The nightly re-embedding job: 1/7 of a 6.3M-chunk corpus re-embedded every
    night (a rolling weekly refresh), submitted by a cron job."""
    nightly_at_local: str = "22:00"
    """When the cron job submits it (after the evening tail; the world without
    deferral runs it at once)."""
    nightly_deadline_local: str = "07:00"
    """It must be done before the next office day starts."""
    imports_per_weekday: float = 3.0
    """Customers importing a knowledge base (onboarding, migrations): Poisson count
    per weekday during office hours; bulk (nobody waits on each chunk)."""
    import_median_items: float = 60_000.0
    """Lognormal median size of an import (sigma 0.7), submitted over 30 minutes;
    deadline: the next office day."""
    rush_imports_per_weekday: float = 1.0
    """Imports promised the same day: deadline 2 hours after submission (the
    deferral releases them early, ``deadline_lead_s`` before the deadline)."""
    rush_items: int = 5_000
    customers: int = 2_000_000
    """The weekly retrain rescores every customer (``churn_rescore`` items)."""
    retrain_at: str = "2026-03-08T20:00:00+00:00"
    """Sunday 20:00 UTC; deadline Monday 06:00 local."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def with_overrides(self, pairs: list[str]) -> GeneratorParams:
        """``NAME=VALUE`` overrides; an unknown name or a bad value names the field."""
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, object] = {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            if name not in types:
                raise ValueError(f"generator parameter {name!r}: unknown "
                                 f"(known: {', '.join(sorted(types))})")
            current = getattr(self, name)
            try:
                changes[name] = type(current)(value)
            except ValueError as exc:
                raise ValueError(f"generator parameter {name!r}: {exc}") from exc
        return replace(self, **changes)  # type: ignore[arg-type]


def _local(day: datetime, hhmm: str, zone: ZoneInfo) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    local = day.astimezone(zone).replace(hour=h, minute=m, second=0, microsecond=0)
    return local.astimezone(UTC)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation, rounded (exact enough at this size)
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    k, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _office_time(rng: random.Random, day: datetime, zone: ZoneInfo) -> datetime:
    local = day.astimezone(zone).replace(hour=9, minute=0, second=0, microsecond=0)
    return (local + timedelta(seconds=rng.uniform(0, 8 * 3600))).astimezone(UTC)


def generate(p: GeneratorParams = GeneratorParams()) -> list[Record]:
    """The trace's records, sorted by time."""
    rng = random.Random(p.seed)
    zone = ZoneInfo(p.zone)
    start = datetime.fromisoformat(p.start)
    out: list[Record] = []
    for d in range(p.days):
        day = start + timedelta(days=d)
        out += _urgent_day(rng, p, day, zone)
        weekday = day.astimezone(zone).weekday() < 5
        out += _bulk_day(rng, p, day, zone, weekday)
    retrain = datetime.fromisoformat(p.retrain_at)
    if start <= retrain < start + timedelta(days=p.days):
        dl = _local(retrain + timedelta(days=1), "06:00", zone)
        out.append(Record(retrain.timestamp(), "churn_rescore", p.customers, False,
                          dl.timestamp()))
    out.sort(key=lambda r: r.t)
    return out


def _urgent_day(rng: random.Random, p: GeneratorParams, day: datetime,
                zone: ZoneInfo) -> list[Record]:
    out = []
    for h in range(24):
        noise = rng.lognormvariate(0, p.urgent_noise)
        hour = day + timedelta(hours=h)
        local = hour.astimezone(zone)
        rate = p.urgent_peak_items_per_s * HOURLY[local.hour] * WEEKDAY[local.weekday()] * noise
        for m in range(60):
            n = _poisson(rng, rate * 60)
            if n:
                t = hour + timedelta(minutes=m)
                out.append(Record(t.timestamp(), "embed", n, True, None, 60.0))
    if day.astimezone(zone).weekday() < 5:
        for _ in range(_poisson(rng, p.bursts_per_weekday)):
            t = _office_time(rng, day, zone)
            n = max(1, round(rng.lognormvariate(math.log(p.burst_median_items), 0.8)))
            out.append(Record(t.timestamp(), "embed", n, True, None, rng.uniform(60, 600)))
    return out


def _bulk_day(rng: random.Random, p: GeneratorParams, day: datetime, zone: ZoneInfo,
              weekday: bool) -> list[Record]:
    out = []
    nightly = _local(day, p.nightly_at_local, zone)
    deadline = _local(nightly + timedelta(days=1), p.nightly_deadline_local, zone)
    out.append(Record(nightly.timestamp(), "embed", p.nightly_items, False, deadline.timestamp()))
    if not weekday:
        return out
    for _ in range(_poisson(rng, p.imports_per_weekday)):
        t = _office_time(rng, day, zone)
        n = max(1, round(rng.lognormvariate(math.log(p.import_median_items), 0.7)))
        dl = _local(t + timedelta(days=1), p.nightly_deadline_local, zone)
        out.append(Record(t.timestamp(), "embed", n, False, dl.timestamp(), 1800.0))
    for _ in range(_poisson(rng, p.rush_imports_per_weekday)):
        t = _office_time(rng, day, zone)
        out.append(Record(t.timestamp(), "embed", p.rush_items, False,
                          (t + timedelta(hours=2)).timestamp()))
    return out


def meta(p: GeneratorParams) -> dict[str, object]:
    return {"generator": "worker_mesh.gpu_pool.sim.generator", "params": p.as_dict()}
