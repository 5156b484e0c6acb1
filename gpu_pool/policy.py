"""The GPU pool's autoscaling policy: a pure function, no I/O, no clock of its own.

Inputs are what an operator would look at: work queued in the GPU queues, work already
*reserved* by workers (with ``acks_late`` and prefetch a queue list can be empty while
work is in flight: those messages sit in the transport's unacked hash), held bulk work
and when the next off-peak window opens. The controller (``gpu_pool.controller``) feeds
it and applies its answer; KEDA expresses the same numbers as triggers (docs/gpu-pool.md).

Rules, in order:

1. ``outstanding = queued + reserved``; ``need = ceil(outstanding / target_per_worker)``.
2. Pre-warm: held work and a window opening within ``prewarm_s`` (or open now, with
   held work not yet released): at least ``prewarm_workers``.
3. Any work at all (or pre-warm): at least ``max(min_workers, 1)``.
4. No work: keep the current size until idle for ``idle_to_zero_s``, then ``min_workers``
   (zero by default: scale-to-zero).
5. Clamp to ``[min_workers, max_workers]``.
6. Scale up at once; scale down only ``cooldown_s`` after the last scale change, and
   never below ``busy_workers`` (a worker with a task in progress is not removed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PolicyConfig:
    target_per_worker: int = 128
    min_workers: int = 0
    max_workers: int = 4
    idle_to_zero_s: float = 300.0
    prewarm_s: float = 600.0
    prewarm_workers: int = 1
    cooldown_s: float = 120.0

    @classmethod
    def from_settings(cls, gpu: object) -> PolicyConfig:
        return cls(**{f: getattr(gpu, f) for f in cls.__dataclass_fields__})

    def __post_init__(self) -> None:
        if self.target_per_worker < 1:
            raise ValueError("target_per_worker must be >= 1")
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError("need 0 <= min_workers <= max_workers")


@dataclass(frozen=True)
class Observation:
    """One look at the pool, taken by the caller at time ``now`` (seconds, any epoch)."""

    now: float
    current: int
    """Replicas the Deployment has now."""
    queued: int = 0
    """Messages waiting in the GPU queues (list lengths)."""
    reserved: int = 0
    """Messages delivered to workers and not yet acknowledged (in progress + prefetched)."""
    held: int = 0
    """Bulk items held for the off-peak window."""
    seconds_until_window: float | None = None
    """0 when a window is open now; None when no window is configured."""
    busy_workers: int = 0
    """Workers with a task in progress (never scaled away)."""


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between calls (the caller stores and passes it back)."""

    last_busy_at: float | None = None
    last_change_at: float | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    state: PolicyState

    @property
    def changed(self) -> bool:  # pragma: no cover - convenience
        return self.reason != "steady"


def desired_workers(obs: Observation, cfg: PolicyConfig,
                    state: PolicyState = PolicyState()) -> Decision:
    """The number of GPU workers the pool should have now, and why."""
    outstanding = max(0, obs.queued) + max(0, obs.reserved)
    busy = outstanding > 0 or obs.busy_workers > 0
    if busy:
        state = replace(state, last_busy_at=obs.now)

    need = math.ceil(outstanding / cfg.target_per_worker)
    reason = f"{outstanding} outstanding / {cfg.target_per_worker} per worker"
    prewarm = (obs.held > 0 and obs.seconds_until_window is not None
               and obs.seconds_until_window <= cfg.prewarm_s)
    if prewarm and need < cfg.prewarm_workers:
        need, reason = cfg.prewarm_workers, (
            f"pre-warm: {obs.held} held, window in {obs.seconds_until_window:.0f}s")
    if (busy or prewarm) and need < max(cfg.min_workers, 1):
        need = max(cfg.min_workers, 1)
    if not busy and not prewarm:
        idle_since = state.last_busy_at
        idle_for = math.inf if idle_since is None else obs.now - idle_since
        if idle_for >= cfg.idle_to_zero_s:
            need, reason = cfg.min_workers, f"idle {_fmt(idle_for)}: down to min"
        else:
            need, reason = obs.current, f"idle {_fmt(idle_for)} < {cfg.idle_to_zero_s:.0f}s: hold"
    desired = min(max(need, cfg.min_workers), cfg.max_workers)
    if desired != need:
        reason += f" (clamped to [{cfg.min_workers}, {cfg.max_workers}])"

    if desired < obs.current:
        floor = min(obs.busy_workers, obs.current)
        if desired < floor:
            desired, reason = floor, reason + f"; kept {floor} busy worker(s)"
        since = (math.inf if state.last_change_at is None
                 else obs.now - state.last_change_at)
        if desired < obs.current and since < cfg.cooldown_s:
            return Decision(obs.current, f"cooldown ({since:.0f}s < {cfg.cooldown_s:.0f}s); "
                            f"wanted {desired}: {reason}", state)
    if desired != obs.current:
        state = replace(state, last_change_at=obs.now)
        return Decision(desired, reason, state)
    return Decision(desired, "steady: " + reason, state)


def _fmt(seconds: float) -> str:
    return "forever" if math.isinf(seconds) else f"{seconds:.0f}s"
