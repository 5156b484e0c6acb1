"""Run history against a real redis-server: per-step timings, attempts and errors, the
secondary indexes behind each filter, retention, supersede and cancel."""

from __future__ import annotations

import uuid

import pytest
import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import CANCELLED, FAILED, RunLedger, RunRecord, StepInfo
from worker_mesh.mesh.runs_history import RunHistory, RunQuery
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration


def _pair(settings: MeshSettings, r: redis.Redis, **over: object) -> tuple[RunLedger, RunHistory]:
    rs = settings.runs.model_copy(update=over)
    keys = Keys(settings.redis.key_prefix)
    return RunLedger(r, keys, rs), RunHistory(r, keys, rs)


def _start(led: RunLedger, workflow: str, entity: str, *, now: float, version: str = "1",
           steps: tuple[str, ...] = ("a", "b"), supersede: bool = False) -> str:
    rid = str(uuid.uuid4())
    rec = RunRecord(run_id=rid, workflow=workflow, version=version, event_id=uuid.uuid4().hex,
                    event_type="customer.updated", entity=entity,
                    steps=[StepInfo(s, f"mesh.probe.{s}", "standard") for s in steps],
                    last=steps[-1], canvas="{}", attrs={"fields": '{"type": "customer.updated"}'},
                    supersede=supersede)
    led.start_runs([rec], now=now)
    return rid


def test_each_step_records_its_timing_attempts_error_and_what_it_wrote(
        settings: MeshSettings, r: redis.Redis) -> None:
    led, hist = _pair(settings, r)
    rid = _start(led, "churn", "customer:1", now=1000.0)
    led.begin(rid, "a", "standard", now=1000.5)
    assert led.step_retry(rid, "a", 1.0, now=1000.7)
    led.step_error(rid, "a", "TransientError: provider busy")
    led.begin(rid, "a", "standard", now=1002.0)
    led.step_done(rid, "a", {"model_version": "m1", "wrote": ["result:churn:1"]}, now=1002.25)
    led.begin(rid, "b", "standard", now=1003.0)
    assert led.end(rid, FAILED, "boom", claimer="t", step="b", error="PermanentError: bad")
    d = hist.show(rid)
    assert d is not None
    a, b = d.steps
    assert (a.state, a.attempts, a.first_start, a.last_start, a.end) == (
        "succeeded", 2, 1000.5, 1002.0, 1002.25)
    assert a.duration_s == pytest.approx(0.25)
    assert a.error == "TransientError: provider busy" and a.wrote == "result:churn:1"
    assert (b.state, b.attempts, b.error) == ("failed", 1, "PermanentError: bad")
    assert d.summary.state == FAILED and d.summary.failed_step == "b"
    assert d.summary.model_version == "m1" and d.cause == {"type": "customer.updated"}


def test_filters_read_their_index(settings: MeshSettings, r: redis.Redis) -> None:
    led, hist = _pair(settings, r)
    now = 10_000.0
    ok = _start(led, "churn", "customer:1", now=now)
    led.step_done(ok, "a", {"model_version": "m1"}, now=now + 1)
    led.step_done(ok, "b", {}, now=now + 2)
    bad = _start(led, "churn", "customer:2", now=now + 3)
    led.end(bad, FAILED, "x", step="a", error="E: e", now=now + 4)
    v2 = _start(led, "churn", "customer:1", now=now + 5, version="2")
    led.step_done(v2, "a", {"model_version": "m2"}, now=now + 6)
    other = _start(led, "reembed", "content:9", now=now + 7)
    gone = _start(led, "reembed", "content:9", now=now + 8)
    led.cancel(gone, now=now + 9)

    def ids(**kw: object) -> list[str]:
        return [s.run_id for s in hist.query(RunQuery(**kw), now=now + 10)]  # type: ignore[arg-type]

    assert ids() == [gone, other, v2, bad, ok]
    assert ids(workflow="churn") == [v2, bad, ok]
    assert ids(workflow="churn", version="2") == [v2]
    assert ids(state="failed") == [bad] and ids(state="cancelled") == [gone]
    assert ids(state="started") == [other, v2]
    assert ids(state="succeeded") == [ok]
    assert ids(entity="customer:1") == [v2, ok]
    assert ids(model_version="m1") == [ok] and ids(model_version="m2") == [v2]
    assert ids(workflow="churn", since=now + 2, until=now + 4) == [bad]
    assert ids(state="failed", failed_step="a") == [bad] and ids(failed_step="b") == []
    assert hist.count(RunQuery(workflow="reembed"), now=now + 10) == 2
    with pytest.raises(ValueError, match="state must be one of"):
        RunQuery(state="done")


def test_indexes_are_trimmed_to_the_retention_as_they_are_written(
        settings: MeshSettings, r: redis.Redis) -> None:
    led, hist = _pair(settings, r, retention_s=100)
    old = _start(led, "churn", "customer:1", now=1000.0)
    led.end(old, FAILED, "x", now=1001.0)
    assert r.ttl(hist.idx_workflow("churn", "1")) > 0
    new = _start(led, "churn", "customer:1", now=1200.0)
    led.end(new, FAILED, "x", now=1201.0)
    for key in (hist.idx_workflow("churn", "1"), hist.idx_entity("customer:1"),
                hist.idx_state("failed")):
        assert [m.decode() for m in r.zrange(key, 0, -1)] == [new], key
    assert [s.run_id for s in hist.query(RunQuery(), now=1202.0)] == [new]


def test_a_newer_run_for_the_entity_supersedes_the_one_in_flight(
        settings: MeshSettings, r: redis.Redis) -> None:
    led, hist = _pair(settings, r)
    first = _start(led, "sup", "customer:7", now=1.0, supersede=True)
    led.begin(first, "a", "standard", now=1.5)
    rid = str(uuid.uuid4())
    rec = RunRecord(run_id=rid, workflow="sup", version="1", event_id="e2", event_type="t",
                    entity="customer:7", steps=[StepInfo("a", "t.a")], last="a", canvas="{}",
                    supersede=True)
    [out] = led.start_runs([rec], now=2.0)
    assert out.new and out.superseded == first
    assert led.get_field(first, "state") == CANCELLED
    assert led.get_field(first, "superseded_by") == rid
    assert led.begin(first, "b", "standard").state == CANCELLED  # the wrapper's cue: Ignore
    # the step running when it was cancelled finishes and is recorded; the run stays cancelled
    assert led.step_done(first, "a", {"wrote": "x"}, now=2.5) == 0
    d = hist.show(first)
    assert d is not None and d.steps[0].state == "succeeded" and d.steps[1].state == "pending"
    # another entity, or a workflow without supersede, is left alone
    other = _start(led, "sup", "customer:8", now=3.0, supersede=True)
    plain = _start(led, "plain", "customer:7", now=3.0)
    _start(led, "plain", "customer:7", now=4.0)
    assert led.get_field(other, "state") == led.get_field(plain, "state") == "started"
    # the latest-run map only holds runs in flight
    assert led.step_done(rid, "a", {}) == 2
    assert not r.hexists(f"{Keys(settings.redis.key_prefix).runs_tag()}:latest", "sup|customer:7")
    c = led.counts()
    assert c["cancelled"] == 1 and c["started"] == c["succeeded"] + c["cancelled"] + led.in_flight_count()
