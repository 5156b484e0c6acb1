"""Replay by query and backfill (``events.replay``) against a real redis-server, with
the dispatcher in this process and a starter that records what it is asked to start:
selection, the grant, what the dispatcher does with the replayed entries, and that a
producer cannot forge one. Plus the chord culprit of a dead letter's reason."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from tests.test_dispatcher_inprocess import RecordingStarter
from worker_mesh.chains.registry import On, Workflow, WorkflowRegistry
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerActivity, CustomerUpdated
from worker_mesh.events.dispatcher import Dispatcher
from worker_mesh.events.publisher import Publisher
from worker_mesh.events.replay import Replayer
from worker_mesh.events.wire import encode
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import FAILED, RunLedger, RunRecord, StepInfo
from worker_mesh.mesh.runs_history import RunQuery
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.tasks.dlq import chord_culprit

pytestmark = pytest.mark.integration


def _registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()

    def build(env, ctx):  # type: ignore[no-untyped-def]
        raise AssertionError("not built here")

    reg.add(Workflow("score", "1", (On("customer.activity"), On("customer.updated")), build))
    reg.add(Workflow("audit-trail", "1", (On("customer.activity"),), build))
    return reg


def _ran(led: RunLedger, env: Envelope, *, failed: bool, mv: str = "m1") -> str:
    rid = str(uuid.uuid4())
    led.start_many([RunRecord(run_id=rid, workflow="score", version="1", event_id=env.event_id,
                              event_type=env.type, entity=env.entity_key,
                              steps=[StepInfo("a", "t.a"), StepInfo("b", "t.b")], last="b",
                              canvas="{}", attrs={"fields": json.dumps(encode(env, 1 << 20))})])
    led.step_done(rid, "a", {"model_version": mv})
    if failed:
        led.end(rid, FAILED, "boom", step="b", error="E: x")
    else:
        led.step_done(rid, "b", {})
    return rid


def test_replay_of_a_query_goes_through_the_dispatcher_with_its_grant(
        settings: MeshSettings, r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    led = RunLedger(r, keys, settings.runs)
    envs = [Envelope.wrap(CustomerActivity(customer_id=c, logins_30d=1, active_days_30d=1))
            for c in ("1", "2", "1")]
    _ran(led, envs[0], failed=True)
    _ran(led, envs[0], failed=True)  # the same event again: replayed once
    _ran(led, envs[1], failed=False)
    _ran(led, envs[2], failed=True, mv="m2")
    rp = Replayer(r, settings, keys)
    plan = rp.from_runs("score", RunQuery(workflow="score", state="failed"))
    assert (plan.count, plan.runs) == (2, 3)
    assert [e["id"] for e in plan.events] == [envs[0].event_id, envs[2].event_id]  # oldest first
    latest = rp.from_runs("score", RunQuery(workflow="score", entity="customer:1"),
                          latest_per_entity=True)
    assert [e["id"] for e in latest.events] == [envs[2].event_id]
    assert rp.from_runs("score", RunQuery(workflow="score", model_version="m2")).count == 1

    starter = RecordingStarter(_registry())
    d = Dispatcher(r, settings, keys, starter.registry, starter, consumer="t")
    d.ensure_groups()
    rp.grant(plan)
    rp.send(plan, plan.events)
    for _ in range(5):
        d.step()
    # only the named workflow ran (not audit-trail), as new runs (new ids), not deduplicated
    assert [(q.workflow, q.env.event_id) for q in starter.started] == [
        ("score", envs[0].event_id), ("score", envs[2].event_id)]
    assert all(q.run_id == starter.registry.get("score").run_id(q.env, plan.replay_id)
               for q in starter.started)
    # a producer that sets replay/route itself, without a grant, is dead-lettered
    r.xadd(keys.stream(0), {**encode(envs[1], 1 << 20), "replay": "q-forged", "route": "score"})
    for _ in range(3):
        d.step()
    assert len(starter.started) == 2
    [dead] = [x for x in r.xrange(keys.dlq) if x[1][b"reason"].startswith(b"fields replay/route")]
    assert dead[1][b"reason_code"] == b"invalid"


def test_backfill_selects_recorded_events_of_a_time_range_that_route_to_the_workflow(
        settings: MeshSettings, r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    pub = Publisher(r, settings.streams, keys)
    pub.publish(CustomerUpdated(customer_id="early", plan="pro"))
    time.sleep(0.05)
    since = time.time()
    inside = [pub.publish(CustomerActivity(customer_id=c, logins_30d=1, active_days_30d=1))
              for c in ("a", "b")]
    pub.publish(CustomerUpdated(customer_id="c", plan="pro"))
    until = time.time()
    time.sleep(0.05)
    pub.publish(CustomerActivity(customer_id="late", logins_30d=1, active_days_30d=1))
    rp = Replayer(r, settings, keys)
    plan = rp.from_streams("audit-trail", _registry(), int(since * 1000), int(until * 1000))
    assert [e["id"] for e in plan.events] == inside  # customer.updated does not route there
    assert all(e["key"].startswith("customer:") for e in plan.events)
    assert rp.from_streams("score", _registry(), int(since * 1000), int(until * 1000)).count == 3


def test_the_dead_letter_of_a_chord_names_the_member_that_failed() -> None:
    rid = "6f1d3a52-8b0e-4c1e-9b55-3e0c8f2a7d10"
    assert chord_culprit(f"ChordError: Dependency {rid}:part1 raised PermanentError('x')") == \
        f"{rid}:part1"
    assert chord_culprit("PermanentError: chord part 1 failed") is None
