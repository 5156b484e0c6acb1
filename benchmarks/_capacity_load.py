"""The capacity benchmark's load: a steady, realistic mix of customer events at a fixed
rate, the backlog sampled every second, and the event -> stored score freshness.

Mix (per phase, seeded): 5% ``customer.created`` (new customers), 35%
``customer.updated``, 60% ``customer.activity``, spread over ``customers`` existing
customers; 15% of the events come in *bursts*: 3-5 events for one customer within
0.8 s (what coalescing is for). Events are built (validated) before the phase starts.

Freshness of an event published at ``t`` for customer ``c``: the end time of the first
``churn`` run of ``c`` whose own event was published at or after ``t`` (a coalesced run
carries the latest event of its window and scores the profile that the earlier events
were merged into), minus ``t``. Run end times come from the run ledger.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.catalog import CustomerActivity, CustomerCreated, CustomerUpdated
from worker_mesh.events.publisher import Publisher

TICK_S = 0.05


@dataclass
class Published:
    """What the publisher sent: per event (customer, publish time, churn run id)."""

    customers: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    lag_s: float = 0.0
    """How far the publisher ended behind its schedule (it could not keep the rate)."""


def mix(rate: int, seconds: float, customers: int, seed: int, new_prefix: str
        ) -> list[tuple[float, Event]]:
    """(offset in s, event) for one phase, sorted by offset."""
    rng = random.Random(seed)
    n = int(rate * seconds)
    out: list[tuple[float, Event]] = []
    new = 0
    while len(out) < n:
        t = rng.random() * seconds
        if rng.random() < 0.15 / 4:  # a burst: ~15% of events, 4 per burst on average
            cid = f"c{rng.randrange(customers):06d}"
            for _ in range(rng.randint(3, 5)):
                out.append((min(seconds, t + rng.random() * 0.8), _event(rng, cid)))
            continue
        roll = rng.random()
        if roll < 0.05:
            new += 1
            out.append((t, CustomerCreated(customer_id=f"{new_prefix}{new}", plan="pro",
                                           seats=rng.randint(1, 40), mrr=round(rng.random() * 500, 2),
                                           signup_date=date(2025, 1 + rng.randrange(12), 1))))
        else:
            out.append((t, _event(rng, f"c{rng.randrange(customers):06d}")))
    out.sort(key=lambda x: x[0])
    return out[:n]


def _event(rng: random.Random, cid: str) -> Event:
    if rng.random() < 0.35 / 0.95:
        return CustomerUpdated(customer_id=cid, seats=rng.randint(1, 50),
                               nps=rng.randint(0, 10), version=rng.randint(2, 10_000))
    return CustomerActivity(customer_id=cid, logins_30d=rng.randrange(200),
                            active_days_30d=rng.randrange(31), support_tickets_30d=rng.randrange(4))


def publish_paced(pub: Publisher, events: list[tuple[float, Event]], run_id_of: Any) -> Published:
    """Publish each event at its offset (in ticks of 50 ms, ``publish_many`` per tick);
    record its publish time and the id its churn run would have."""
    out = Published()
    offsets = [e[0] for e in events]
    t0 = time.time()
    i = 0
    while i < len(events):
        now = time.time() - t0
        j = bisect.bisect_right(offsets, now, lo=i)
        if j == i:
            time.sleep(min(TICK_S, max(0.0, events[i][0] - now)))
            continue
        envs = [Envelope.wrap(e) for _, e in events[i:j]]
        sent = time.time()
        pub.publish_many(envs)
        for env in envs:
            out.customers.append(str(env.entity_key))
            out.times.append(sent)
            out.run_ids.append(run_id_of(env))
        i = j
    out.lag_s = max(0.0, (time.time() - t0) - events[-1][0]) if events else 0.0
    return out


class Sampler:
    """Samples the backlog every second in a thread: the ``cpu`` Celery queue's length,
    the stream's undelivered + unacknowledged entries, the runs in flight."""

    def __init__(self, client: Any, queue_key: str, stream_key: str, ledger: Any) -> None:
        self.client, self.queue_key, self.stream_key, self.ledger = client, queue_key, stream_key, ledger
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)

    def backlog(self) -> dict[str, float]:
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.queue_key)
        pipe.xinfo_groups(self.stream_key)
        qlen, groups = pipe.execute()
        lag = sum(int(g.get("lag") or 0) + int(g.get("pending") or 0) for g in groups)
        return {"t": time.time(), "queue": int(qlen), "stream": lag,
                "in_flight": self.ledger.in_flight_count()}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.backlog())
            except Exception:  # the stream may not exist yet
                pass
            self._stop.wait(1.0)


def slope_per_s(samples: list[dict[str, float]], key: str) -> float:
    """Least-squares slope of ``key`` over time (items per second)."""
    if len(samples) < 3:
        return 0.0
    xs = [s["t"] for s in samples]
    ys = [s[key] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def freshness(client: Any, keys: Any, pub: Published) -> tuple[list[float], int]:
    """Per event, seconds from publish to the end of the first churn run of its customer
    that carries it or a later event; and how many events have no such run yet."""
    ends: dict[str, float] = {}
    ids = sorted(set(pub.run_ids))
    for k in range(0, len(ids), 5000):
        pipe = client.pipeline(transaction=False)
        for rid in ids[k:k + 5000]:
            pipe.hmget(keys.run(rid), "state", "finished_at")
        for rid, (state, fin) in zip(ids[k:k + 5000], pipe.execute(), strict=True):
            if state in (b"succeeded", "succeeded") and fin:
                ends[rid] = float(fin)
    by_customer: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for cid, t, rid in zip(pub.customers, pub.times, pub.run_ids, strict=True):
        by_customer[cid].append((t, ends.get(rid, -1.0)))
    out: list[float] = []
    missing = 0
    for rows in by_customer.values():
        rows.sort()
        best = float("inf")  # earliest end among this and later events' runs
        for t, end in reversed(rows):
            if end >= 0:
                best = min(best, end)
            if best == float("inf"):
                missing += 1
            else:
                out.append(max(0.0, best - t))
    return out, missing


def new_prefix() -> str:
    return "n" + uuid.uuid4().hex[:6] + "-"
