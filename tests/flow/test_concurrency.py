"""Concurrency leases against a real redis-server (simulated clock where time matters).

Given at most N running steps per key, When steps ask, release, die or come back,
Then never more than N hold a key, a dead holder's slot frees itself when its lease
expires, a redelivered step takes its own slot back, and waiters go first come first
served.
"""

from __future__ import annotations

import time

import pytest
import redis

from worker_mesh.mesh.errors import Throttled
from worker_mesh.mesh.flow import Concurrency, ConcurrencyLimiter, Flow, FlowControl, Lease, Wait
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings

T0 = 2_000_000.0


def leases(settings: MeshSettings, r: redis.Redis, **update: object) -> ConcurrencyLimiter:
    flow = settings.flow.model_copy(update={"concurrency": {"customer": 1, "training": 2},
                                            "lease_s": 30.0, **update})
    return ConcurrencyLimiter(r, Keys(settings.redis.key_prefix), flow)


def test_at_most_n_per_key_and_keys_are_independent(settings: MeshSettings,
                                                    r: redis.Redis) -> None:
    cl = leases(settings, r)
    a = cl.acquire("customer", "c1", "step-a", now=T0)
    b = cl.acquire("customer", "c1", "step-b", now=T0 + 1)
    other = cl.acquire("customer", "c2", "step-c", now=T0 + 1)
    assert isinstance(a, Lease) and isinstance(b, Wait) and isinstance(other, Lease)
    assert b.delay_s > 0 and b.what == "customer:c1"
    t = [cl.acquire("training", "all", f"t{i}", now=T0) for i in range(3)]
    assert [isinstance(x, Lease) for x in t] == [True, True, False]
    cl.release(a, now=T0 + 2)
    assert isinstance(cl.acquire("customer", "c1", "step-b", now=T0 + 2.1), Lease)


def test_a_dead_holder_frees_its_slot_when_the_lease_expires(settings: MeshSettings,
                                                             r: redis.Redis) -> None:
    cl = leases(settings, r)
    assert isinstance(cl.acquire("customer", "c1", "killed", now=T0), Lease)  # never released
    w = cl.acquire("customer", "c1", "next", now=T0 + 5)
    # told to ask again after the typical hold (1 s before any was measured), never
    # later than the lease's expiry
    assert isinstance(w, Wait) and 0 < w.delay_s <= 25.0
    assert isinstance(cl.acquire("customer", "c1", "next", now=T0 + 29.9), Wait)
    assert isinstance(cl.acquire("customer", "c1", "next", now=T0 + 30.0), Lease)
    assert cl.status("customer", now=T0 + 30.0)["running"] == 1


def test_a_redelivered_step_takes_its_own_slot_back(settings: MeshSettings,
                                                    r: redis.Redis) -> None:
    cl = leases(settings, r)
    assert isinstance(cl.acquire("customer", "c1", "step-a", now=T0), Lease)
    again = cl.acquire("customer", "c1", "step-a", now=T0 + 3)  # same id: its redelivery
    assert isinstance(again, Lease)
    assert isinstance(cl.acquire("customer", "c1", "step-b", now=T0 + 32), Wait)  # renewed


def test_waiters_are_served_first_come_first_served(settings: MeshSettings,
                                                    r: redis.Redis) -> None:
    cl = leases(settings, r)
    holder = cl.acquire("customer", "c1", "h", now=T0)
    assert isinstance(holder, Lease)
    w1 = cl.acquire("customer", "c1", "w1", now=T0 + 1)
    w2 = cl.acquire("customer", "c1", "w2", now=T0 + 2)
    assert isinstance(w1, Wait) and isinstance(w2, Wait) and (w1.ahead, w2.ahead) == (0, 1)
    cl.release(holder, now=T0 + 3)
    assert isinstance(cl.acquire("customer", "c1", "w2", now=T0 + 3.1), Wait)  # w1 first
    assert isinstance(cl.acquire("customer", "c1", "w1", now=T0 + 3.2), Lease)
    st = cl.status("customer", now=T0 + 3.3)
    assert (st["running"], st["waiting"], st["keys_busy"]) == (1, 1, 1)


def test_renewal_keeps_a_long_step_its_slot(settings: MeshSettings, r: redis.Redis) -> None:
    cl = leases(settings, r, lease_s=0.6)
    lease = cl.acquire("customer", "c1", "long")
    assert isinstance(lease, Lease)
    lease.keepalive(0.2)
    time.sleep(1.5)  # 2.5 leases
    assert isinstance(cl.acquire("customer", "c1", "other"), Wait)
    lease.release()
    assert isinstance(cl.acquire("customer", "c1", "other"), Lease)


def test_flow_enter_holds_leases_and_releases_them_on_close(settings: MeshSettings,
                                                            r: redis.Redis) -> None:
    flow_settings = settings.flow.model_copy(update={"concurrency": {"customer": 1}})
    fc = FlowControl(r, Keys(settings.redis.key_prefix), flow_settings)
    decl = Flow(concurrency=(Concurrency("customer", key=lambda a: a["customer"]),))
    with fc.enter(decl, {"customer": "c9"}, step_id="s1"):
        with pytest.raises(Throttled) as info:
            fc.enter(decl, {"customer": "c9"}, step_id="s2")
        assert info.value.delay_s > 0 and info.value.what == "customer"
    fc.enter(decl, {"customer": "c9"}, step_id="s2").close()
    assert not fc.limited(Flow(concurrency=(Concurrency("undeclared", key="k"),)))
