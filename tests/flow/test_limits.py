"""The rate limiter's Lua scripts against a real redis-server, on a simulated clock.

Given a budget (requests and tokens per interval), When steps ask as the task wrapper
does (come back after the wait they were told), Then the admissions never exceed the
budget in any window, the budget is used (throughput near the limit), urgent steps go
first, tenants share fairly, and a 429 pauses the resource for everyone.
"""

from __future__ import annotations

import random

import pytest
import redis

from tests.flow.sim import Sim, Step, max_in_window
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.mesh.flow import Permit, Priority, RateLimiter, Wait
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import LimitSpec, MeshSettings

T0 = 1_000_000.0


def limiter(settings: MeshSettings, r: redis.Redis, *, prefix: str | None = None,
            weights: dict[str, float] | None = None, burst: float = 0.1,
            **limit: int) -> RateLimiter:
    """A limiter for resource ``llm`` (60 s interval, 1 s clock margin); ``burst=1``
    turns pacing off (a pure sliding window)."""
    flow = settings.flow.model_copy(update={
        "limits": {"llm": LimitSpec(interval_s=60, **limit)}, "clock_margin_s": 1.0,
        "tenant_weights": weights or {}, "burst_fraction": burst})
    return RateLimiter(r, Keys(prefix or settings.redis.key_prefix), flow)


def test_requests_window_admits_the_budget_then_says_when(settings: MeshSettings,
                                                          r: redis.Redis) -> None:
    rl = limiter(settings, r, burst=1.0, requests_per_interval=3)
    got = [rl.acquire("llm", ticket=f"s{i}", now=T0 + i) for i in range(5)]
    assert [isinstance(g, Permit) for g in got] == [True, True, True, False, False]
    w3, w4 = got[3], got[4]
    assert isinstance(w3, Wait) and isinstance(w4, Wait)
    # the first admission (T0) leaves the 61 s window (60 + 1 margin) at T0 + 61
    assert w3.delay_s == pytest.approx(T0 + 61 - (T0 + 3))
    assert (w4.ahead, w4.delay_s) == (1, pytest.approx(T0 + 1 + 61 - (T0 + 4)))
    assert isinstance(rl.acquire("llm", ticket="s4", now=T0 + 61.5), Wait)  # s3 is ahead
    assert isinstance(rl.acquire("llm", ticket="s3", now=T0 + 61.0), Permit)
    p = rl.acquire("llm", ticket="s4", now=T0 + 62.0)
    assert isinstance(p, Permit) and p.waited_s == pytest.approx(58.0)


def test_tokens_are_weighted_and_reconciled_with_real_usage(settings: MeshSettings,
                                                            r: redis.Redis) -> None:
    rl = limiter(settings, r, burst=1.0, tokens_per_interval=1000)
    a = rl.acquire("llm", ticket="a", tokens=600, now=T0)
    assert isinstance(a, Permit)
    assert isinstance(rl.acquire("llm", ticket="b", tokens=600, now=T0 + 1), Wait)
    a.reconcile(150)  # the provider reported 150: the estimate's excess comes back
    b = rl.acquire("llm", ticket="b", tokens=600, now=T0 + 2)
    assert isinstance(b, Permit)
    st = rl.status("llm", now=T0 + 2)
    assert (st["window_tokens"], st["window_requests"], st["waiting"]) == (750, 2, 0)
    b.reconcile(900)  # more than estimated: counted in full
    assert rl.status("llm", now=T0 + 3)["window_tokens"] == 1050
    assert rl.status("llm", now=T0 + 62)["window_tokens"] == 900  # a left the window
    assert rl.status("llm", now=T0 + 64)["window_tokens"] == 0


def test_a_step_larger_than_the_budget_is_refused_naming_the_resource(
        settings: MeshSettings, r: redis.Redis) -> None:
    rl = limiter(settings, r, tokens_per_interval=1000)
    with pytest.raises(PermanentError, match=r"rate limit llm.*1001 tokens"):
        rl.acquire("llm", ticket="x", tokens=1001)


def test_undeclared_resources_are_unlimited_without_redis(settings: MeshSettings) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    rl = RateLimiter(dead, Keys("x"), settings.flow)
    got = [rl.acquire("nowhere", ticket=str(i), tokens=10**9) for i in range(100)]
    assert all(isinstance(g, Permit) for g in got)
    got[0].reconcile(5)
    got[1].cancel()


def test_a_429_pauses_the_resource_for_every_worker(settings: MeshSettings,
                                                    r: redis.Redis) -> None:
    rl = limiter(settings, r, requests_per_interval=100)
    assert rl.pause("llm", 7.0, now=T0) == pytest.approx(7.0)
    w = rl.acquire("llm", ticket="other-worker", now=T0 + 2)
    assert isinstance(w, Wait) and w.delay_s == pytest.approx(5.0)
    assert rl.status("llm", now=T0 + 2)["paused_s"] == pytest.approx(5.0)
    assert isinstance(rl.acquire("llm", ticket="other-worker", now=T0 + 7.01), Permit)


def test_cancel_gives_the_budget_back(settings: MeshSettings, r: redis.Redis) -> None:
    rl = limiter(settings, r, burst=1.0, requests_per_interval=1, tokens_per_interval=100)
    p = rl.acquire("llm", ticket="a", tokens=100, now=T0)
    assert isinstance(p, Permit)
    p.cancel()
    assert isinstance(rl.acquire("llm", ticket="b", tokens=100, now=T0 + 0.1), Permit)


def test_never_above_the_budget_in_any_window_and_near_full_throughput(
        settings: MeshSettings, r: redis.Redis) -> None:
    """1,000 steps arriving in bursts, token estimates above the real use, callers
    coming back up to the clock margin late: the provider's 60 s windows never hold
    more than 120 requests or 20,000 tokens, and the budget is used."""
    rl = limiter(settings, r, requests_per_interval=120, tokens_per_interval=20_000)
    rng = random.Random(7)
    sim = Sim(rl, call_s=0.3, lateness=lambda s: rng.uniform(0, 0.9))
    steps = []
    for i in range(1000):
        actual = rng.randint(100, 260)
        step = Step(f"s{i}", tenant=f"t{i % 7}", estimate=actual + 150, actual=actual)
        steps.append(step)
        sim.submit(step, T0 + (i // 250) * 20 + rng.uniform(0, 2))
    sim.run()
    assert len(sim.admitted) == 1000
    # the provider sees a call when it is admitted plus up to the margin
    seen = [(s.admitted + rng.uniform(0, 0.9), s.actual) for s in sim.admitted]  # type: ignore[operator]
    assert max_in_window([(t, 1) for t, _ in seen], 60.0) <= 120
    assert max_in_window(seen, 60.0) <= 20_000
    span = max(s.admitted for s in sim.admitted) - T0  # type: ignore[type-var]
    tokens = sum(s.actual for s in steps)
    ideal = max(1000 / 120, tokens / 20_000) * 60  # the binding limit's pace
    assert ideal / span >= 0.9, (ideal, span)
    # waiting steps were told their turn, not polled: few asks per step
    assert sum(s.asks for s in steps) / len(steps) < 4


def test_urgent_steps_go_ahead_of_a_bulk_backlog(settings: MeshSettings,
                                                 r: redis.Redis) -> None:
    rl = limiter(settings, r, requests_per_interval=60)
    sim = Sim(rl, call_s=0.1)
    for i in range(600):
        sim.submit(Step(f"b{i}", tenant="flood", priority=Priority.BULK), T0 + i * 0.01)
    urgent = [Step(f"u{i}", tenant="vip", priority=Priority.URGENT) for i in range(20)]
    for i, u in enumerate(urgent):
        sim.submit(u, T0 + 120 + i * 0.5)
    sim.run(until=T0 + 400)
    waits = sorted(u.admitted - u.arrived for u in urgent)  # type: ignore[operator]
    # the budget frees one request per second (60/min): 20 urgent steps need <= 20 s
    assert waits[int(0.95 * len(waits)) - 1] <= 20 + 2


def test_two_bulk_tenants_share_equally_and_weights_count(settings: MeshSettings,
                                                          r: redis.Redis) -> None:
    """A tenant floods 1,000 requests; another arrives later with 300: while both
    wait, each gets half of the budget; a tenant of weight 2 gets two thirds."""
    for weights, expect in (({}, 0.5), ({"b": 2.0}, 2 / 3)):
        rl = limiter(settings, r, prefix=f"{settings.redis.key_prefix}{len(weights)}",
                     weights=weights, requests_per_interval=60)
        sim = Sim(rl, call_s=0.1)
        for i in range(1000):
            sim.submit(Step(f"a{i}", tenant="a", priority=Priority.BULK), T0 + i * 0.001)
        for i in range(300):
            sim.submit(Step(f"b{i}", tenant="b", priority=Priority.BULK), T0 + 30 + i * 0.001)
        sim.run(until=T0 + 200)
        during = [st.tenant for st in sim.admitted
                  if T0 + 70 <= st.admitted <= T0 + 200]  # type: ignore[operator]
        share_b = during.count("b") / len(during)
        assert abs(share_b - expect) <= 0.1 * expect, (weights, share_b)


def test_a_waiter_that_never_comes_back_stops_blocking_after_the_grace(
        settings: MeshSettings, r: redis.Redis) -> None:
    rl = limiter(settings, r, requests_per_interval=1)
    assert isinstance(rl.acquire("llm", ticket="first", now=T0), Permit)
    ghost = rl.acquire("llm", ticket="ghost", now=T0 + 1)  # its worker dies now
    late = rl.acquire("llm", ticket="late", now=T0 + 2)
    assert isinstance(ghost, Wait) and isinstance(late, Wait) and late.ahead == 1
    wake = T0 + 1 + ghost.delay_s
    assert isinstance(rl.acquire("llm", ticket="late", now=wake + 1), Wait)  # ghost holds
    grace = settings.flow.ticket_grace_s
    assert isinstance(rl.acquire("llm", ticket="late", now=wake + grace + 0.1), Permit)
    # the ghost's step comes back much later: it keeps its tag, and gets in line again
    back = rl.acquire("llm", ticket="ghost", now=wake + grace + 1)
    assert isinstance(back, Wait) and back.waited_s == pytest.approx(wake + grace + 1 - T0 - 1)
