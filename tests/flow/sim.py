"""A discrete-event driver for the limiter: steps that do what the task wrapper does
(ask; on Wait come back after exactly the delay it was told; on Permit call, then
reconcile), against the real Lua scripts in a real redis-server, on a simulated clock
(``now`` is passed to every script), so minutes of traffic run in a second."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from worker_mesh.mesh.flow import Permit, Priority, RateLimiter


@dataclass
class Step:
    ticket: str
    tenant: str = "default"
    priority: Priority = Priority.NORMAL
    estimate: int = 0
    actual: int = 0
    arrived: float = 0.0
    admitted: float | None = None
    asks: int = 0


@dataclass
class Sim:
    limiter: RateLimiter
    resource: str = "llm"
    call_s: float = 0.2
    """How long a call takes between admission and its reconcile."""
    lateness: Callable[[Step], float] = lambda s: 0.0
    """Extra delay before a waiting step comes back (a busy worker)."""
    drop: Callable[[Step], bool] = lambda s: False
    """A step that never comes back after a wait (its worker died)."""
    admitted: list[Step] = field(default_factory=list)
    _q: list[tuple[float, int, str, Step, Permit | None]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)

    def submit(self, step: Step, at: float) -> None:
        step.arrived = at
        heapq.heappush(self._q, (at, next(self._seq), "ask", step, None))

    def run(self, until: float = 1e12) -> None:
        while self._q and self._q[0][0] <= until:
            now, _, what, step, permit = heapq.heappop(self._q)
            if what == "done":
                assert permit is not None
                permit.reconcile(step.actual)
                continue
            step.asks += 1
            got = self.limiter.acquire(self.resource, ticket=step.ticket, tokens=step.estimate,
                                       tenant=step.tenant, priority=step.priority, now=now)
            if isinstance(got, Permit):
                step.admitted = now
                self.admitted.append(step)
                heapq.heappush(self._q, (now + self.call_s, next(self._seq), "done", step, got))
            elif not self.drop(step):
                back = now + got.delay_s + self.lateness(step)
                heapq.heappush(self._q, (back, next(self._seq), "ask", step, None))


def max_in_window(times_costs: list[tuple[float, int]], window: float) -> int:
    """The largest sum of costs whose times fall in one half-open window [t, t + window)."""
    pts = sorted(times_costs)
    best = total = 0
    j = 0
    for i in range(len(pts)):
        total += pts[i][1]
        while pts[j][0] <= pts[i][0] - window:
            total -= pts[j][1]
            j += 1
        best = max(best, total)
    return best
