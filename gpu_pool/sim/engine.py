"""The simulated GPU pool: SimPy processes around the real ``gpu_pool`` decisions.

Processes (``simpy.Environment``, time = epoch seconds):

- *feeder*: submits each trace line at its time: urgent work to the ``gpu`` queue;
  bulk work through ``gpu_pool.deferral.hold_decision`` (the function
  ``Deferral.submit`` acts on) when the strategy defers, else to ``gpu-batch``;
- *autoscaler*: every ``gpu.autoscale_interval_s``, the real
  ``gpu_pool.policy.desired_workers`` on an ``Observation`` of the simulated queues,
  held work, ``Windows.seconds_until_open`` and busy nodes; scale-up starts nodes
  that serve after ``boot_s``; scale-down removes booting nodes first, then idle ones;
- *releaser*: every ``gpu.release_interval_s``, what ``Deferral.release_due`` does:
  everything held when ``Windows.is_open``, else the items whose deadline release
  time has come, moved to ``gpu-batch`` at the measured release rate;
- *boots*: one per started node.

Between events the two queues are served as fluids (``gpu_pool.sim.fluid``) by the
ready nodes at ``items_per_s(max_batch)`` of the head task type's curve, the pool's
time shared fairly between ``gpu`` and ``gpu-batch`` when both are backlogged (kombu's
Redis transport rotates the queues it pops from, so a worker on both takes turns).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import simpy

from worker_mesh.gpu_pool.deferral import hold_decision
from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.policy import Observation, PolicyConfig, PolicyState, desired_workers
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.gpu_pool.sim.fluid import FluidQueue
from worker_mesh.gpu_pool.sim.model import NodeModel
from worker_mesh.gpu_pool.sim.trace import Record, Trace
from worker_mesh.mesh.settings import GpuSettings


@dataclass(frozen=True)
class Strategy:
    key: str
    title: str
    autoscale: bool
    batching: bool
    deferral: bool
    fixed_nodes: int = 0


STRATEGIES = (
    Strategy("fixed", "1. fixed pool sized for the peak", False, False, False),
    Strategy("autoscaled", "2. autoscaled, no batching, no deferral", True, False, False),
    Strategy("batched", "3. autoscaled + micro-batching", True, True, False),
    Strategy("deferred", "4. autoscaled + batching + off-peak deferral, pre-warm", True, True, True),
)


@dataclass
class Node:
    requested: float
    ready_at: float
    removed: float | None = None


@dataclass
class Held:
    submitted: float
    items: float
    task_type: str
    deadline: float | None
    release_at: float | None


@dataclass
class Sample:
    t: float
    nodes: int
    ready: int
    queued_urgent: float
    queued_bulk: float
    held: float


@dataclass
class RunResult:
    strategy: Strategy
    start: float
    end: float
    nodes: list[Node]
    urgent: FluidQueue
    bulk: FluidQueue
    busy_node_s: float
    samples: list[Sample]
    held_total: float
    released: dict[str, float]
    items_done: dict[str, float] = field(default_factory=dict)
    unfinished: float = 0.0


class PoolSim:
    """One strategy over one trace. ``run()`` returns a ``RunResult``."""

    def __init__(self, trace: Trace, gpu: GpuSettings, node: NodeModel, strategy: Strategy, *,
                 max_nodes: int | None = None, sample_s: float = 300.0,
                 drain_cap_s: float = 2 * 86400.0) -> None:
        self.trace, self.gpu, self.node, self.strategy = trace, gpu, node, strategy
        self.windows = Windows.parse(gpu.offpeak_windows)
        cfg = PolicyConfig.from_settings(gpu)
        if max_nodes is not None:
            cfg = PolicyConfig(**{**cfg.__dict__, "max_workers": max_nodes,
                                  "min_workers": min(cfg.min_workers, max_nodes)})
        self.cfg = cfg
        self.state = PolicyState()
        self.env = simpy.Environment(initial_time=trace.start)
        self.urgent, self.bulk = FluidQueue("gpu"), FluidQueue("gpu-batch")
        self.held: deque[Held] = deque()
        self.held_total = 0.0
        self.released = {"window": 0.0, "deadline": 0.0}
        self.nodes: list[Node] = []
        self.last_t = trace.start
        self.busy_node_s = 0.0
        self.busy_now = 0
        self.samples: list[Sample] = []
        self.sample_s = sample_s
        self.drain_cap_s = drain_cap_s
        self.fed = False
        self.done: dict[str, float] = {}
        self._lim: dict[str, tuple[int, float]] = {}

    # -- the pool between events ---------------------------------------------------------
    def ready(self, t: float) -> int:
        return sum(1 for n in self.nodes if n.removed is None and n.ready_at <= t)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.removed is None]

    def _limits(self, q: FluidQueue) -> tuple[str, int, float]:
        task_type = q.head_type() or self.node.default_task_type
        if not self.strategy.batching:
            return task_type, 1, 0.0
        lim = self._lim.get(task_type)
        if lim is None:
            got = self.gpu.limits(task_type)
            lim = self._lim[task_type] = (got.max_batch, got.max_wait_ms / 1000.0)
        return task_type, lim[0], lim[1]

    def advance(self, to: float) -> None:
        """Serve both queues from ``last_t`` to ``to`` with the nodes ready at ``last_t``
        (every change of the ready count is an event, so it is constant in between)."""
        t = self.last_t
        if to <= t:
            return
        self.last_t = to
        n = self.ready(t)
        if n == 0:
            self.urgent.realize(to)
            self.bulk.realize(to)
            self.busy_now = 0
            return
        dt = to - t
        plan = []
        need = {}
        for q in (self.urgent, self.bulk):
            q.realize(to)
            task_type, b, wait_s = self._limits(q)
            curve = self.node.curve(task_type)
            demand = q.queued()
            need[q.name] = demand / (n * curve.items_per_s(b))  # node-seconds / n
            plan.append((q, curve, b, wait_s, demand))
        busy = 0.0
        for q, curve, b, wait_s, demand in plan:
            other = sum(v for k, v in need.items() if k != q.name)
            share = max(0.5, 1.0 - other / dt)
            mu = n * curve.items_per_s(b) * share
            lam = demand / (n * dt)  # offered items/s per node over this interval
            b_eff = _batch_size(curve.fixed_s, curve.per_item_s, lam, b, wait_s)
            util = min(1.0, lam * curve.pass_s(b_eff) / b_eff)
            floor = _gather_s(b, b_eff, wait_s) + util * curve.pass_s(b_eff) / 2
            shift = (b_eff - 1) / (2 * mu) if b_eff > 1 else 0.0
            out = q.serve(t, to, mu, pass_s=curve.pass_s(b_eff), floor_s=floor, shift_s=shift)
            busy += out.items * curve.pass_s(b_eff) / b_eff
            for k, v in out.by_type.items():
                self.done[k] = self.done.get(k, 0.0) + v
        self.busy_node_s += busy
        self.busy_now = min(n, math.ceil(busy / dt - 1e-9)) if busy > 0 else 0

    # -- processes -------------------------------------------------------------------------
    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.env.now, UTC)

    def feeder(self):  # type: ignore[no-untyped-def]
        for rec in _chunks(self.trace.records, self.strategy.deferral):
            if rec.t > self.env.now:
                yield self.env.timeout(rec.t - self.env.now)
            self.advance(self.env.now)
            self.submit(rec)
        self.fed = True

    def submit(self, rec: Record) -> None:
        if rec.urgent:
            self.urgent.add(self.env.now, rec.items, rec.span_s, rec.task_type, None)
            return
        if self.strategy.deferral:
            dl = datetime.fromtimestamp(rec.deadline, UTC) if rec.deadline else None
            d = hold_decision(Resource.GPU_BULK, self.gpu, self.windows, self._now_dt(), dl)
            if d.held:
                self.held.append(Held(self.env.now, rec.items, rec.task_type, rec.deadline,
                                      d.release_at))
                self.held_total += rec.items
                return
        self.bulk.add(self.env.now, rec.items, rec.span_s, rec.task_type, rec.deadline)

    def held_items(self) -> float:
        return sum(h.items for h in self.held)

    def releaser(self):  # type: ignore[no-untyped-def]
        every = self.gpu.release_interval_s
        while True:
            yield self.env.timeout(every)
            if not self.held:
                if self.fed:
                    return
                continue
            self.advance(self.env.now)
            if self.windows.is_open(self._now_dt()):
                self._release(list(self.held), "window")
                self.held.clear()
            else:
                due = [h for h in self.held if h.release_at is not None
                       and h.release_at <= self.env.now]
                if due:
                    self._release(due, "deadline")
                    gone = {id(h) for h in due}
                    self.held = deque(h for h in self.held if id(h) not in gone)

    def _release(self, items: list[Held], why: str) -> None:
        """Moved to ``gpu-batch`` at the measured release rate, all of them together."""
        total = sum(h.items for h in items)
        span = total / self.node.release_items_per_s
        for h in items:
            self.bulk.add(self.env.now, h.items, span, h.task_type, h.deadline)
        self.released[why] += total

    def autoscaler(self):  # type: ignore[no-untyped-def]
        every = self.gpu.autoscale_interval_s
        while True:
            self.advance(self.env.now)
            held = self.held_items()
            obs = Observation(
                now=self.env.now, current=len(self.live()),
                queued=math.ceil(self.urgent.queued() + self.bulk.queued() - 1e-6),
                reserved=0, held=math.ceil(held - 1e-6),
                seconds_until_window=(self.windows.seconds_until_open(self._now_dt())
                                      if held > 0 else None),
                busy_workers=self.busy_now)
            dec = desired_workers(obs, self.cfg, self.state)
            self.state = dec.state
            self.scale_to(dec.desired)
            if self.finished():
                return
            yield self.env.timeout(every)

    def finished(self) -> bool:
        idle = (self.fed and not self.held and self.urgent.drained() and self.bulk.drained())
        return ((idle and len(self.live()) <= self.cfg.min_workers)
                or self.env.now > self.trace.end + self.drain_cap_s)

    def scale_to(self, desired: int) -> None:
        live = self.live()
        now = self.env.now
        for _ in range(desired - len(live)):
            node = Node(now, now + self.node.boot_s)
            self.nodes.append(node)
            self.env.process(self.boot(node))
        if desired < len(live):
            # booting nodes go first (newest first), then ready ones
            order = sorted(live, key=lambda nd: (nd.ready_at <= now, -nd.requested))
            for nd in order[:len(live) - desired]:
                nd.removed = now

    def boot(self, node: Node):  # type: ignore[no-untyped-def]
        yield self.env.timeout(self.node.boot_s)
        self.advance(self.env.now)  # serve up to now with the old count, then add it

    def sampler(self):  # type: ignore[no-untyped-def]
        while True:
            self.advance(self.env.now)
            self.samples.append(Sample(self.env.now, len(self.live()), self.ready(self.env.now),
                                       self.urgent.queued(), self.bulk.queued(),
                                       self.held_items()))
            if self.finished() or (not self.strategy.autoscale and self._fixed_done()):
                return
            yield self.env.timeout(self.sample_s)

    def _fixed_done(self) -> bool:
        return (self.fed and self.urgent.drained() and self.bulk.drained()
                and self.env.now >= self.trace.end)

    # -- run -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        env = self.env
        start = self.trace.start
        if self.strategy.autoscale:
            main = env.process(self.autoscaler())
        else:  # a fixed pool: up and warm before the trace starts
            for _ in range(self.strategy.fixed_nodes):
                self.nodes.append(Node(start, start))
            main = env.process(self._fixed_watch())
        env.process(self.feeder())
        if self.strategy.deferral:
            env.process(self.releaser())
        env.process(self.sampler())
        env.run(until=main)
        end = env.now
        self.advance(end)
        for nd in self.nodes:
            if nd.removed is None:
                nd.removed = end
        unfinished = (self.urgent.queued() + self.bulk.queued() + self.held_items()
                      + self.urgent.pending_ramps(math.inf) + self.bulk.pending_ramps(math.inf))
        self.bulk.missed += self.bulk.unfinished_with_deadline() + sum(
            h.items for h in self.held if h.deadline is not None)
        return RunResult(self.strategy, start, end, self.nodes, self.urgent, self.bulk,
                         self.busy_node_s, self.samples, self.held_total, dict(self.released),
                         dict(self.done), unfinished)

    def _fixed_watch(self):  # type: ignore[no-untyped-def]
        every = self.gpu.autoscale_interval_s
        while not self._fixed_done() and self.env.now <= self.trace.end + self.drain_cap_s:
            yield self.env.timeout(every)
            self.advance(self.env.now)


def _chunks(records: tuple[Record, ...], split_bulk: bool) -> list[Record]:
    """Bulk lines spread over time are fed a minute at a time when deferring, so items
    are held (or not) as they are submitted, not all at the line's start."""
    if not split_bulk:
        return list(records)
    out: list[Record] = []
    for r in records:
        if r.urgent or r.span_s <= 60:
            out.append(r)
            continue
        parts = math.ceil(r.span_s / 60)
        per = r.items / parts
        for i in range(parts):
            out.append(Record(r.t + i * 60, r.task_type, per, False,  # type: ignore[arg-type]
                              r.deadline, min(60.0, r.span_s - i * 60)))
    out.sort(key=lambda x: x.t)
    return out


def _batch_size(fixed_s: float, per_item_s: float, lam: float, max_batch: int,
                wait_s: float) -> float:
    """The batch a node forms at ``lam`` items/s: big enough to keep up
    (``b / pass_s(b) >= lam``), at least what arrives while it gathers, at most
    ``max_batch``."""
    if max_batch <= 1:
        return 1.0
    if lam * per_item_s >= 1:
        return float(max_batch)
    keep_up = lam * fixed_s / (1 - lam * per_item_s)
    return float(min(max_batch, max(1.0, keep_up, 1 + lam * wait_s)))


def _gather_s(max_batch: int, b_eff: float, wait_s: float) -> float:
    """Mean time an item waits for its batch to fill at light load: the first waits
    ``max_wait``, later ones less (a full batch does not wait)."""
    if max_batch <= 1 or wait_s <= 0 or b_eff >= max_batch:
        return 0.0
    return wait_s * (1 + (b_eff - 1) / 2) / b_eff
