"""The run ledger (``mesh.runs``) against a real redis-server: every transition, the
counters ``mesh audit`` reconciles, memoization, deadlines and the re-driver's claim."""

from __future__ import annotations

import pytest
import redis

from tests.support.runs import finished_run, record
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import CANCELLED, FAILED, RunLedger, redrive_overdue, split_task_id
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration


def _ledger(settings: MeshSettings, r: redis.Redis, **over: object) -> RunLedger:
    return RunLedger(r, Keys(settings.redis.key_prefix), settings.runs.model_copy(update=over))


def test_task_ids_of_runs_split_into_run_and_step() -> None:
    rid = "6f1d3a52-8b0e-4c1e-9b55-3e0c8f2a7d10"
    assert split_task_id(f"{rid}:score") == (rid, "score")
    assert split_task_id(f"{rid}:shard-3:x") == (rid, "shard-3:x")
    assert split_task_id("0b1c2d3e-0000-0000-0000-000000000000") is None
    assert split_task_id("not-a-run:step") is None and split_task_id(None) is None


def test_a_run_starts_once_and_its_last_step_ends_it(settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r)
    rec = record(led, "churn", now=100.0)
    assert led.start_many([rec], now=101.0) == [False]  # redelivered: not counted twice
    assert led.counts() == {"started": 1, "churn|started": 1}
    assert led.step_done(rec.run_id, "a", {"x": 1}, now=100.5) == 1
    assert led.get_field(rec.run_id, "done_step") == "a"
    assert led.step_done(rec.run_id, "b", {"y": 2}, now=101.0) == 2
    assert led.step_done(rec.run_id, "b", {"y": 2}, now=102.0) == 0  # already ended
    assert led.get_field(rec.run_id, "state") == "succeeded"
    assert led.get_field(rec.run_id, "canvas") is None  # dropped once ended
    assert r.ttl(Keys(settings.redis.key_prefix).run(rec.run_id)) > 0  # retention
    st = led.workflow_stats("churn")
    assert (st.successes, st.failures, st.p50_s) == (1, 0, pytest.approx(1.0))
    assert led.last_success() == {"churn": pytest.approx(101.0)}
    assert led.in_flight_count() == 0


def test_exactly_one_outcome_whoever_ends_the_run(settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r)
    rec = record(led, "content")
    assert led.end(rec.run_id, FAILED, "boom", claimer="t1")
    assert not led.end(rec.run_id, CANCELLED, "late cancel")
    assert led.step_done(rec.run_id, "b", {}) == 0
    # a retried failure callback (same claimer) may still dead-letter; another may not
    assert led.end(rec.run_id, FAILED, "boom", claimer="t1")
    assert not led.end(rec.run_id, FAILED, "boom", claimer="t2")
    led.dead_lettered(rec.run_id, "1-0")
    assert not led.end(rec.run_id, FAILED, "boom", claimer="t1")
    c = led.counts()
    assert (c["started"], c["failed"], c.get("succeeded", 0), c.get("cancelled", 0)) == (1, 1, 0, 0)
    with pytest.raises(ValueError):
        led.end(rec.run_id, "exploded")


def test_a_step_that_succeeded_is_memoized_and_begin_returns_it(
        settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r, memo_max_bytes=100)
    rec = record(led, "w", steps=("a", "big", "c"))
    b = led.begin(rec.run_id, "a", "standard")
    assert (b.state, b.memo) == ("started", None)
    led.step_done(rec.run_id, "a", {"score": 0.25})
    again = led.begin(rec.run_id, "a", "standard")
    assert again.memoized and again.result == {"score": 0.25}
    led.step_done(rec.run_id, "big", "x" * 500)  # over memo_max_bytes: not kept
    big = led.begin(rec.run_id, "big", "standard")
    assert big.memo == "-" and not big.memoized
    assert led.begin("00000000-0000-0000-0000-000000000000", "a", "standard").state is None


def test_a_resumed_run_copies_the_failed_runs_memo(settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r)
    old = record(led, "w", steps=("a", "b", "c"))
    led.step_done(old.run_id, "a", 1)
    led.step_done(old.run_id, "b", 2)
    led.end(old.run_id, FAILED, "c failed")
    from dataclasses import replace

    new = replace(old, run_id="11111111-2222-3333-4444-555555555555", resume_of=old.run_id)
    led.start_many([new])
    assert led.memo_steps(new.run_id) == {"a", "b"}
    assert r.ttl(Keys(settings.redis.key_prefix).run_memo(new.run_id)) == -1  # kept while in flight


def test_deadlines_follow_queued_running_and_retry(settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r, redrive_queued_after_s=10, redrive_running_after_s={"training": 500})
    keys = Keys(settings.redis.key_prefix)
    rec = record(led, "w", steps=("a", "b", "c"), now=1000.0)
    assert r.zscore(keys.runs_inflight(), rec.run_id) == 1010.0
    led.begin(rec.run_id, "a", "training", now=1001.0)
    assert r.zscore(keys.runs_inflight(), rec.run_id) == 1501.0
    led.begin(rec.run_id, "b", "standard", now=1002.0)  # a parallel part: the max wins
    assert r.zscore(keys.runs_inflight(), rec.run_id) == 1501.0
    led.step_done(rec.run_id, "b", None, now=1003.0)
    assert r.zscore(keys.runs_inflight(), rec.run_id) == 1501.0  # a is still running
    led.step_done(rec.run_id, "a", None, now=1004.0)
    assert r.zscore(keys.runs_inflight(), rec.run_id) == 1014.0
    led.step_retry(rec.run_id, "c", 60, now=1005.0)
    assert r.zscore(keys.runs_inflight(), rec.run_id) == 1075.0
    assert led.workflow_stats("w").retries == 1
    assert led.overdue_count(now=1074.0) == 0 and led.overdue_count(now=1076.0) == 1


def test_the_redriver_resends_overdue_runs_once_then_gives_up(
        settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r, redrive_queued_after_s=10, redrive_max=2)
    other = _ledger(settings, r, redrive_queued_after_s=10, redrive_max=2)
    rec = record(led, "w", steps=("a", "b"), now=1000.0)
    led.step_done(rec.run_id, "a", 1, now=1001.0)
    sent: list[str] = []
    gave_up: list[str] = []

    def resend(run_id: str, canvas: str) -> None:
        sent.append(run_id)

    def give_up(od, reason: str) -> None:  # type: ignore[no-untyped-def]
        gave_up.append(reason)

    assert redrive_overdue(led, resend, give_up, now=1005.0) == (0, 0)  # not due yet
    assert redrive_overdue(led, resend, give_up, now=1012.0) == (1, 0)
    assert redrive_overdue(other, resend, give_up, now=1012.0) == (0, 0)  # claimed once
    assert redrive_overdue(other, resend, give_up, now=1023.0) == (1, 0)
    assert redrive_overdue(led, resend, give_up, now=1034.0) == (0, 1)
    assert sent == [rec.run_id, rec.run_id]
    assert "at step b (task mesh.probe.b)" in gave_up[0] and "after 2 re-drive(s)" in gave_up[0]
    assert led.get_field(rec.run_id, "state") == "failed"
    assert led.counts()["redriven"] == 3 and led.in_flight_count() == 0


def test_progress_resets_the_redrive_count(settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r, redrive_queued_after_s=10, redrive_max=1)
    rec = record(led, "w", steps=("a", "b", "c"), now=1000.0)
    noop = lambda *a: None  # noqa: E731
    assert redrive_overdue(led, noop, noop, now=1011.0) == (1, 0)
    led.step_done(rec.run_id, "a", 1, now=1012.0)
    assert led.get_field(rec.run_id, "redrives") == "0"
    assert redrive_overdue(led, noop, noop, now=1023.0) == (1, 0)  # not given up


def test_in_flight_lists_age_and_last_finished_step(settings: MeshSettings, r: redis.Redis) -> None:
    led = _ledger(settings, r)
    rec = record(led, "w", steps=("a", "b"), now=1000.0)
    led.step_done(rec.run_id, "a", 1, now=1001.0)
    [row] = led.in_flight(now=1003.0)
    assert row["run_id"] == rec.run_id and row["last_finished_step"] == "a"
    assert row["age_s"] == pytest.approx(3.0)
    finished_run(led, "w", ok=True, started_at=1000.0, now=1000.5)
    assert led.in_flight_count() == 1
