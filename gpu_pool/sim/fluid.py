"""One GPU queue (``gpu`` or ``gpu-batch``) as a fluid FIFO: exact in order, cheap in time.

A week of traffic is millions of items; one simulation event per item (or per batch of
one, without micro-batching) would take minutes. Here a queue is its cumulative
*arrival curve* (piecewise linear: a trace line with ``span_s`` is a ramp, without one a
step) and its cumulative *service curve*; serving over an interval at a constant rate
``mu`` advances the service curve, and the wait of every item served is ``start -
arrival`` read off the two curves (linear inside a piece, so each piece adds a
uniform range of waits to a histogram). Items keep FIFO order by arrival time even
when trace lines overlap (arrival rates of overlapping lines add up). The simulation
events are then what changes the rates: trace lines, autoscaler and releaser ticks,
nodes becoming ready (``gpu_pool.sim.engine``).

What this leaves out (and the cross-check against a real worker measures): the
discreteness of batches at light load (added back as a gather latency floor), and
Celery's per-message overhead (inside the measured items/s of the node model).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

Comp = tuple[float, str, float | None]
"""(share of the piece's items, task type, deadline or None)."""

_LO, _DECADES, _PER = 1e-3, 10, 50


class WaitHistogram:
    """Weighted waits in log bins (50 a decade from 1 ms: ~4.7% resolution) plus an
    exact zero bin; percentiles read at the bin's geometric middle."""

    def __init__(self) -> None:
        self.edges = _LO * 10 ** (np.arange(_DECADES * _PER + 1) / _PER)
        self.counts = np.zeros(len(self.edges) + 1)  # [<LO, bins..., >=max]
        self.total = 0.0
        self.sum = 0.0
        self.max = 0.0

    def _bin(self, w: float) -> int:
        if w < _LO:
            return 0
        return min(len(self.edges), 1 + int(math.log10(w / _LO) * _PER))

    def add_range(self, w0: float, w1: float, n: float) -> None:
        """``n`` items whose waits are spread evenly between ``w0`` and ``w1``."""
        if n <= 0:
            return
        lo, hi = (w0, w1) if w0 <= w1 else (w1, w0)
        lo = max(lo, 0.0)
        hi = max(hi, lo)
        self.total += n
        self.sum += n * (lo + hi) / 2
        self.max = max(self.max, hi)
        b0, b1 = self._bin(lo), self._bin(hi)
        if b0 == b1 or hi - lo < 1e-12:
            self.counts[b0] += n
            return
        # spread by overlap with each bin (bins are contiguous between b0 and b1)
        idx = np.arange(b0, b1 + 1)
        left = np.where(idx == 0, 0.0, self.edges[np.clip(idx - 1, 0, len(self.edges) - 1)])
        right = np.where(idx >= len(self.edges), np.inf, self.edges[np.clip(idx, 0, len(self.edges) - 1)])
        overlap = np.clip(np.minimum(right, hi) - np.maximum(left, lo), 0.0, None)
        self.counts[b0:b1 + 1] += n * overlap / (hi - lo)

    def quantile(self, q: float) -> float:
        if self.total <= 0:
            return 0.0
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q * self.total))
        if i == 0:
            return 0.0
        if i >= len(self.edges):
            return self.max
        return float(min(math.sqrt(self.edges[i - 1] * self.edges[i]), self.max))

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0


@dataclass
class Piece:
    """Items ``k_a..k_b`` (cumulative) arrive evenly over ``[t_a, t_b]`` (a step if equal)."""

    t_a: float
    t_b: float
    k_a: float
    k_b: float
    comps: tuple[Comp, ...]

    def arrival(self, k: float) -> float:
        if self.t_b <= self.t_a or self.k_b <= self.k_a:
            return self.t_a
        return self.t_a + (k - self.k_a) * (self.t_b - self.t_a) / (self.k_b - self.k_a)

    @property
    def spacing(self) -> float:
        return (self.t_b - self.t_a) / (self.k_b - self.k_a) if self.k_b > self.k_a else 0.0


@dataclass
class Served:
    """What one ``serve`` call did, for the engine's bookkeeping."""

    items: float = 0.0
    by_type: dict[str, float] = field(default_factory=dict)
    missed: float = 0.0


@dataclass
class _Ramp:
    rate: float
    until: float
    comp: tuple[str, float | None]


class FluidQueue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.pieces: deque[Piece] = deque()
        self.arrived = 0.0
        self.served = 0.0
        self.cursor = -math.inf
        self.realized_to = -math.inf
        self.ramps: list[_Ramp] = []
        self.waits = WaitHistogram()
        self.missed = 0.0
        self.shift_s = 0.0

    # -- arrivals ------------------------------------------------------------------------
    def add(self, t: float, items: float, span_s: float, task_type: str,
            deadline: float | None) -> None:
        """Items submitted at ``t`` (a step), or evenly over ``[t, t + span_s)``."""
        self.realize(t)
        if span_s <= 0:
            self._append(Piece(t, t, self.arrived, self.arrived + items,
                               ((1.0, task_type, deadline),)))
            self.arrived += items
        else:
            self.ramps.append(_Ramp(items / span_s, t + span_s, (task_type, deadline)))

    def _append(self, p: Piece) -> None:
        last = self.pieces[-1] if self.pieces else None
        if (last is not None and last.t_a == last.t_b == p.t_a == p.t_b
                and last.comps == p.comps):
            last.k_b = p.k_b  # merge steps at the same instant (releases in groups)
        else:
            self.pieces.append(p)

    def realize(self, to: float) -> None:
        """Turn the ramps' arrivals up to ``to`` into pieces."""
        t = self.realized_to if self.realized_to > -math.inf else to
        while self.ramps and t < to:
            nxt = min(to, min(r.until for r in self.ramps))
            rate = sum(r.rate for r in self.ramps)
            n = rate * (nxt - t)
            if n > 0:
                comps = tuple((r.rate / rate, *r.comp) for r in self.ramps)
                self._append(Piece(t, nxt, self.arrived, self.arrived + n, comps))
                self.arrived += n
            t = nxt
            self.ramps = [r for r in self.ramps if r.until > t]
        self.realized_to = max(self.realized_to, to)

    def queued(self) -> float:
        return max(0.0, self.arrived - self.served)

    def pending_ramps(self, until: float) -> float:
        """Items the ramps will add between now (``realized_to``) and ``until``."""
        return sum(r.rate * max(0.0, min(r.until, until) - self.realized_to) for r in self.ramps)

    def head_type(self) -> str | None:
        return self.pieces[0].comps[0][1] if self.pieces else (
            self.ramps[0].comp[0] if self.ramps else None)

    def drained(self) -> bool:
        return not self.ramps and self.queued() < 1e-6

    # -- service -------------------------------------------------------------------------
    def serve(self, t: float, t_end: float, mu: float, *, pass_s: float = 0.0,
              floor_s: float = 0.0, shift_s: float = 0.0) -> Served:
        """Serve in FIFO order over ``[t, t_end)`` at ``mu`` items/s (arrivals realized up
        to ``t_end`` first). ``pass_s``: a started item is done ``pass_s`` later (deadline
        check); ``floor_s``: least wait of an item (the batch gather latency);
        ``shift_s``: how much earlier a backlogged item starts than the fluid says
        (a batch of ``b`` starts together: its items start ``(b - 1) / 2`` service
        times before their fluid start, on average)."""
        self.shift_s = shift_s
        self.realize(t_end)
        out = Served()
        if mu <= 0:
            return out
        p = 1.0 / mu
        c = max(self.cursor, t)
        while self.pieces and c < t_end:
            pc = self.pieces[0]
            k = max(self.served, pc.k_a)
            if k >= pc.k_b - 1e-9:
                self.pieces.popleft()
                continue
            a = pc.arrival(k)
            if a >= t_end:
                break
            d = pc.spacing
            s0 = max(c, a)
            room = pc.k_b - k
            if d <= p:  # arrivals at least as fast as service: a backlog drains at mu
                cnt = max(0.0, min(room, (t_end - s0) / p))
                self._done(pc, cnt, s0, s0 + cnt * p, s0 - a, s0 - a + cnt * (p - d),
                           pass_s, floor_s, out)
                c = s0 + cnt * p
            elif s0 - a > 1e-9:  # behind a slow ramp: catch up at mu
                cnt = max(0.0, min(room, (t_end - s0) / p, (s0 - a) / (d - p)))
                self._done(pc, cnt, s0, s0 + cnt * p, s0 - a, s0 - a + cnt * (p - d),
                           pass_s, floor_s, out)
                c = s0 + cnt * p
                if cnt > 1e-12 and c < t_end:
                    c = max(c, pc.arrival(self.served))  # caught up now
                    continue
            else:  # caught up: each item starts as it arrives
                cnt = max(0.0, min(room, (t_end - a) / d))
                self._done(pc, cnt, a, a + cnt * d, 0.0, 0.0, pass_s, floor_s, out)
                c = a + cnt * d
            if cnt <= 1e-12:
                break
        self.cursor = c
        self.missed += out.missed
        return out

    def _done(self, pc: Piece, cnt: float, s_first: float, s_last: float, w0: float, w1: float,
              pass_s: float, floor_s: float, out: Served) -> None:
        self.served += cnt
        out.items += cnt
        if self.shift_s and (w0 > 0 or w1 > 0):
            w0, w1 = max(0.0, w0 - self.shift_s), max(0.0, w1 - self.shift_s)
        if floor_s > 0:
            w0, w1 = max(w0, floor_s), max(w1, floor_s)
        self.waits.add_range(w0, w1, cnt)
        for share, task_type, deadline in pc.comps:
            n = cnt * share
            out.by_type[task_type] = out.by_type.get(task_type, 0.0) + n
            if deadline is not None:
                out.missed += n * _late_fraction(s_first, s_last, deadline - pass_s - floor_s)

    def unfinished_with_deadline(self) -> float:
        """Items still queued (or not yet arrived) that carry a deadline."""
        n = 0.0
        for pc in self.pieces:
            left = pc.k_b - max(self.served, pc.k_a)
            if left > 0:
                n += left * sum(s for s, _, dl in pc.comps if dl is not None)
        for r in self.ramps:
            if r.comp[1] is not None:
                n += r.rate * max(0.0, r.until - self.realized_to)
        return n


def _late_fraction(s_first: float, s_last: float, latest_start: float) -> float:
    """Share of items with starts spread evenly over [s_first, s_last] starting after
    ``latest_start``."""
    if s_last <= s_first:
        return 1.0 if s_first > latest_start else 0.0
    return min(1.0, max(0.0, (s_last - max(latest_start, s_first)) / (s_last - s_first)))
