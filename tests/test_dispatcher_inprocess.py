"""The dispatcher in this process against a real redis-server, with a starter that
records its requests (the Celery side is covered by the end-to-end tests)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import redis

from worker_mesh.chains.registry import Coalesce, On, Workflow, WorkflowRegistry
from worker_mesh.events.audit import audit
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentDeleted, CustomerActivity, CustomerUpdated
from worker_mesh.events.dispatcher import Dispatcher, Entry
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.events.routing import StartRequest
from worker_mesh.mesh.errors import BrokerUnavailable
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration


class RecordingStarter:
    """A WorkflowStarter that remembers what it was asked to start."""

    def __init__(self, registry: WorkflowRegistry) -> None:
        self.registry = registry
        self.started: list[StartRequest] = []
        self.fail_with: Exception | None = None

    def run_id(self, workflow: str, env: Envelope, attempt: str = "") -> str:
        return self.registry.get(workflow).run_id(env, attempt)

    def start_many(self, reqs: Sequence[StartRequest]) -> list[str | None]:
        if self.fail_with is not None:
            raise self.fail_with
        out: list[str | None] = []
        for req in reqs:
            if req.env.entity_key == "customer:unbuildable":
                out.append("probe: building the canvas raised ValueError: nope")
            else:
                self.started.append(req)
                out.append(None)
        return out


def _registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()

    def build(env, ctx):  # type: ignore[no-untyped-def]
        raise AssertionError("not built here")

    reg.add(Workflow("probe", "1", (On("customer.activity"),), build))
    reg.add(Workflow("probe-c", "1", (On("customer.updated"),), build,
                     coalesce=Coalesce(window_s=0.3, max_wait_s=1.0)))
    return reg


@pytest.fixture
def setup(settings: MeshSettings, r: redis.Redis):  # type: ignore[no-untyped-def]
    keys = Keys(settings.redis.key_prefix)
    starter = RecordingStarter(_registry())
    d = Dispatcher(r, settings, keys, starter.registry, starter, consumer="test-1")
    d.ensure_groups()
    return d, starter, Publisher(r, settings.streams, keys), keys


def _drain(d: Dispatcher, rounds: int = 5) -> None:
    for _ in range(rounds):
        d.step()


def _activity(cid: str) -> CustomerActivity:
    return CustomerActivity(customer_id=cid, logins_30d=3, active_days_30d=2)


def test_each_event_starts_its_workflow_once_and_is_accounted(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, _keys = setup
    pub.publish_many([_activity(str(i)) for i in range(20)] + [ContentDeleted(content_id="x")])
    _drain(d)
    assert len(starter.started) == 20
    assert len({req.run_id for req in starter.started}) == 20
    [a] = audit(r, d.settings)
    assert a.settled and a.published == 21
    assert a.outcomes == {"started": 20, "unrouted": 1}
    assert a.by_type["customer.activity"] == {"started": 20}


def test_same_idempotency_key_is_deduplicated_but_a_redelivery_is_not(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, keys = setup
    e1 = Envelope.wrap(_activity("1"), idempotency_key="k1")
    e2 = Envelope.wrap(_activity("1"), idempotency_key="k1")
    pub.publish_many([e1, e2])
    # Given a dispatcher that read the entries and died before acknowledging them
    rows = r.xreadgroup(d.d.group, "dead-one", {keys.stream(0): ">"}, count=10)
    first_id = rows[0][1][0][0].decode()
    r.set(keys.dedupe(0, "k1"), first_id)  # it had got as far as the dedupe key
    # When the entries are reclaimed and processed
    time.sleep(d.d.claim_idle_ms / 1000 + 0.1)
    _drain(d)
    # Then the first one runs (it is not a duplicate of itself), the second is deduplicated
    assert [req.env.event_id for req in starter.started] == [e1.event_id]
    [a] = audit(r, d.settings)
    assert a.settled and a.outcomes == {"started": 1, "deduplicated": 1}


def test_a_run_started_before_a_crash_is_not_started_again(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, keys = setup
    pub.publish(_activity("7"))
    [[_, [(eid, fields)]]] = r.xreadgroup(d.d.group, "other", {keys.stream(0): ">"}, count=1)
    e = Entry(0, eid.decode(), dict(fields))
    d.process([e])  # started and recorded
    assert len(starter.started) == 1
    # A second delivery of the same entry (e.g. reclaimed after a slow ack) starts nothing.
    d.process([Entry(0, eid.decode(), dict(fields), deliveries=2)])
    assert len(starter.started) == 1


def test_bad_entries_are_dead_lettered_with_readable_reasons(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, _pub, keys = setup
    s = keys.stream(0)
    good = {"id": "g1", "type": "customer.activity", "v": "1", "ts": "2026-11-23T10:00:00Z",
            "payload": '{"customer_id":"1","logins_30d":1,"active_days_30d":1}'}
    r.xadd(s, good)
    r.xadd(s, {**good, "id": "b1", "type": "customer.exploded"})
    r.xadd(s, {**good, "id": "b2", "payload": '{"customer_id":"1","logins_30d":-5,"active_days_30d":1}'})
    r.xadd(s, {**good, "id": "b3", "payload": "x" * (d.settings.streams.max_payload_bytes + 10)})
    r.xadd(s, {"garbage": "\xff"})
    r.xadd(s, {**good, "id": "b5", "key": "customer:unbuildable",
               "payload": '{"customer_id":"unbuildable","logins_30d":1,"active_days_30d":1}'})
    r.xadd(s, {**good, "id": "g2", "payload": '{"customer_id":"2","logins_30d":1,"active_days_30d":1}'})
    _drain(d)
    assert sorted(req.env.event_id for req in starter.started) == ["g1", "g2"]
    dead = {dl.fields.get("id", "?"): dl for dl in DeadLetters(r, keys, d.settings.streams).list()}
    assert dead["b1"].reason_code == "unknown_type" and "customer.exploded" in dead["b1"].reason
    assert dead["b2"].reason_code == "invalid" and "logins_30d" in dead["b2"].reason
    assert dead["b3"].reason_code == "too_large" and "limit" in dead["b3"].reason
    assert dead["?"].reason_code == "invalid" and "missing field" in dead["?"].reason
    assert dead["b5"].reason_code == "build_failed" and "ValueError" in dead["b5"].reason
    assert dead["b2"].fields["payload"].startswith('{"customer_id"')  # original kept
    [a] = audit(r, d.settings)
    assert a.settled and a.outcomes == {"started": 2, "dead_lettered": 5}


def test_poison_entry_goes_to_the_dlq_after_max_deliveries(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, keys = setup
    pub.publish(_activity("p"))
    fields = r.xrange(keys.stream(0))[0][1]
    eid = r.xrange(keys.stream(0))[0][0].decode()
    d.process([Entry(0, eid, dict(fields), deliveries=d.d.max_deliveries + 1)])
    [dl] = DeadLetters(r, keys, d.settings.streams).list()
    assert dl.reason_code == "poison" and dl.deliveries == d.d.max_deliveries + 1
    assert starter.started == []


def test_many_updates_to_one_entity_coalesce_into_one_run(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, keys = setup
    pub.publish_many([CustomerUpdated(customer_id="c1", nps=i) for i in range(10)]
                     + [CustomerUpdated(customer_id="c2", nps=1)])
    d.step()
    assert starter.started == []  # held, durably
    assert r.zcard(keys.coalesce_due(0)) == 2
    deadline = time.monotonic() + 10
    while len(starter.started) < 2 and time.monotonic() < deadline:
        d.step()
    by_key = {req.env.entity_key: req for req in starter.started}
    assert set(by_key) == {"customer:c1", "customer:c2"} and len(starter.started) == 2
    assert by_key["customer:c1"].coalesced == 10
    assert by_key["customer:c1"].env.payload.nps == 9  # the latest event wins
    assert r.zcard(keys.coalesce_due(0)) == 0
    [a] = audit(r, d.settings)
    assert a.settled and a.outcomes == {"coalesced": 11}


def test_a_slot_survives_a_dispatcher_that_died_while_firing(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, _keys = setup
    pub.publish(CustomerUpdated(customer_id="c9", nps=3))
    d.step()
    # A dispatcher leased the due slot and died before starting the run:
    taken = d.coalesce.take(0, int(time.time() * 1000) + 5000, lease_ms=d.d.claim_idle_ms)
    assert len(taken) == 1 and starter.started == []
    deadline = time.monotonic() + 15
    while not starter.started and time.monotonic() < deadline:
        d.step()
    assert [req.env.entity_key for req in starter.started] == ["customer:c9"]


def test_broker_outage_leaves_the_batch_unacknowledged(setup, r) -> None:  # type: ignore[no-untyped-def]
    d, starter, pub, keys = setup
    pub.publish(_activity("b"))
    starter.fail_with = BrokerUnavailable("broker down")
    with pytest.raises(BrokerUnavailable):
        d.step()
    assert r.xpending(keys.stream(0), d.d.group)["pending"] == 1
    starter.fail_with = None
    time.sleep(d.d.claim_idle_ms / 1000 + 0.1)
    _drain(d)
    assert len(starter.started) == 1
    [a] = audit(r, d.settings)
    assert a.settled and a.outcomes == {"started": 1}


def test_an_entry_that_breaks_the_starter_ends_as_poison_alone(settings: MeshSettings,
                                                                r: redis.Redis) -> None:
    s = MeshSettings.load({**settings.to_env(), "MESH_DISPATCHER_MAX_DELIVERIES": "2"})
    keys = Keys(s.redis.key_prefix)

    class Buggy(RecordingStarter):
        def start_many(self, reqs: Sequence[StartRequest]) -> list[str | None]:
            if any(req.env.entity_key == "customer:bug" for req in reqs):
                raise TypeError("a bug met by this one event")
            return super().start_many(reqs)

    starter = Buggy(_registry())
    d = Dispatcher(r, s, keys, starter.registry, starter, consumer="test-bug")
    d.ensure_groups()
    Publisher(r, s.streams, keys).publish_many([_activity("ok1"), _activity("bug"), _activity("ok2")])
    d.step()
    # The innocent entries of the batch ran; the culprit stays pending ...
    assert sorted(req.env.entity_key for req in starter.started) == ["customer:ok1", "customer:ok2"]
    assert r.xpending(keys.stream(0), s.dispatcher.group)["pending"] == 1
    # ... and once reclaimed more than max_deliveries times, it is poison.
    deadline = time.monotonic() + 30
    while DeadLetters(r, keys, s.streams).count() == 0 and time.monotonic() < deadline:
        d.step()
    [dl] = DeadLetters(r, keys, s.streams).list()
    assert dl.reason_code == "poison" and dl.fields["key"] == "customer:bug"
    [a] = audit(r, s)
    assert a.settled and a.outcomes == {"started": 2, "dead_lettered": 1}


def test_a_replay_naming_a_workflow_reruns_only_that_workflow(settings: MeshSettings,
                                                              r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    reg = _registry()
    reg.add(Workflow("probe-2", "1", (On("customer.activity"),), lambda env, ctx: None))
    starter = RecordingStarter(reg)
    d = Dispatcher(r, settings, keys, reg, starter, consumer="test-route")
    d.ensure_groups()
    Publisher(r, settings.streams, keys).publish(_activity("x1"))
    _drain(d, 2)
    assert sorted(req.workflow for req in starter.started) == ["probe", "probe-2"]
    # Given probe-2's run failed and was dead-lettered naming it
    fields = {k.decode(): v.decode() for k, v in r.xrange(keys.stream(0))[0][1].items()}
    dlq = DeadLetters(r, keys, settings.streams)
    dl_id = dlq.add("workflow_failed", "probe-2 failed", fields, source="t", workflow="probe-2")
    # When it is replayed
    dlq.replay([dl_id])
    _drain(d, 2)
    # Then only probe-2 runs again, as a new run
    assert [req.workflow for req in starter.started[2:]] == ["probe-2"]
    assert starter.started[2].run_id != starter.started[1].run_id


def test_consumers_of_dead_dispatchers_are_pruned_once_they_hold_nothing(setup, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    d, _starter, pub, keys = setup
    stream = keys.stream(0)
    pub.publish(_activity("p1"))
    # "holder" read the entry and died with it pending; "ghost" read nothing and died
    r.xreadgroup(d.d.group, "holder", {stream: ">"}, count=1)
    r.xgroup_createconsumer(stream, d.d.group, "ghost")
    _drain(d, 1)
    time.sleep(0.3)
    assert d.prune_consumers(inactive_s=0.2) == 1
    names = {c["name"] for c in r.xinfo_consumers(stream, d.d.group)}
    assert b"ghost" not in names and "ghost" not in names
    assert {n.decode() if isinstance(n, bytes) else n for n in names} >= {"holder"}
