"""The canvases the starter sends (inspected, no broker), and what a real worker makes
of them: each run's success recorded once, with or without the bookkeeping task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from celery import chain, chord, group

from tests.support.procs import start, wait_for
from worker_mesh.chains.registry import On, RunContext, Workflow, WorkflowRegistry
from worker_mesh.chains.starter import FAILED_TASK, FINISHED_TASK, CeleryStarter
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.events.routing import StartRequest
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

PROBES = '["tests.support.probe_tasks"]'
APP = create_app(MeshSettings.load({"MESH_REDIS_URL": "redis://127.0.0.1:1/0",
                                    "MESH_CELERY_EXTRA_MODULES": PROBES}))
ENV = Envelope.wrap(CustomerActivity(customer_id="1", logins_30d=1, active_days_30d=1))


def _starter(build) -> CeleryStarter:  # type: ignore[no-untyped-def]
    reg = WorkflowRegistry()
    reg.add(Workflow("w", "3", (On("customer.activity"),), build))
    return CeleryStarter(APP, reg, fire_and_forget=False, batch_publish=False)


def _prepare(build):  # type: ignore[no-untyped-def]
    st = _starter(build)
    return st.prepare(StartRequest("w", ENV, st.run_id("w", ENV), 1, {"id": ENV.event_id}))


def _canvas(build):  # type: ignore[no-untyped-def]
    return _prepare(build)[0]


def _errbacks(sig) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["task"] for e in sig.options.get("link_error", [])]


def test_run_ids_are_deterministic_and_a_replay_is_a_new_attempt() -> None:
    st = _starter(lambda env, ctx: ctx.sig("mesh.probe.record", ctx.meta, {}))
    assert st.run_id("w", ENV) == st.run_id("w", ENV)
    assert st.run_id("w", ENV, "1-0") != st.run_id("w", ENV)


def test_one_task_is_the_runs_last_step_and_gets_the_errback() -> None:
    canvas, record = _prepare(lambda env, ctx: ctx.sig("mesh.probe.record", ctx.meta, {}))
    assert type(canvas).__name__ == "Signature" and "link" not in canvas.options  # no 2nd task
    assert record.last == "record" and [s.step for s in record.steps] == ["record"]
    assert record.steps[0].kind == "standard" and record.version == "3"
    assert _errbacks(canvas) == [FAILED_TASK]
    assert canvas.options["task_id"] == f"{record.run_id}:record"
    assert json.loads(record.canvas)["options"]["task_id"] == f"{record.run_id}:record"


def test_a_chain_last_task_records_the_run_and_every_task_has_the_errback() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return chain(ctx.sig("mesh.probe.record", ctx.meta, {}, step="a"),
                     ctx.sig("mesh.probe.record", ctx.meta, {}, step="b"))

    canvas, record = _prepare(build)
    assert [t.task for t in canvas.tasks] == ["mesh.probe.record"] * 2
    assert record.last == "b" and [s.step for s in record.steps] == ["a", "b"]
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.tasks)


def test_a_plain_celery_task_as_last_step_is_followed_by_the_bookkeeping_task() -> None:
    canvas, record = _prepare(lambda env, ctx: ctx.sig("mesh.probe.plain", ctx.meta))
    assert [t.task for t in canvas.tasks] == ["mesh.probe.plain", FINISHED_TASK]
    assert record.last == "finished"
    assert canvas.tasks[1].options["task_id"].endswith(":finished")
    assert all(t.options["headers"]["mesh_workflow"] == "w" for t in canvas.tasks)
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.tasks)


def test_a_task_nobody_declared_fails_the_build_naming_workflow_and_task() -> None:
    st = _starter(lambda env, ctx: ctx.sig("mesh.not.declared.here", ctx.meta))
    [err] = st.start_many([StartRequest("w", ENV, "r1")])
    assert err is not None and "'mesh.not.declared.here'" in err and "workflow 'w'" in err


def test_a_builder_returning_no_canvas_is_reported() -> None:
    st = _starter(lambda env, ctx: {"not": "a canvas"})
    [err] = st.start_many([StartRequest("w", ENV, "r1")])
    assert err is not None and "TypeError" in err and "not a Celery canvas" in err


def test_a_chain_ending_in_a_group_keeps_the_bookkeeping_task() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return chain(ctx.sig("mesh.probe.record", ctx.meta, {}, step="a"),
                     group(ctx.sig("mesh.probe.record", ctx.meta, {}, step=f"g{i}") for i in range(2)))

    canvas, record = _prepare(build)  # chain | group | task: Celery makes the end a chord
    assert canvas.tasks[-1].body.task == FINISHED_TASK
    assert record.last == "finished" and [s.step for s in record.steps] == ["a", "g0", "g1", "finished"]


def test_chord_header_tasks_get_the_errback_too() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        header = group(ctx.sig("mesh.probe.record", ctx.meta, {}, step=f"s{i}") for i in range(3))
        return chord(header, ctx.sig("mesh.probe.record", ctx.meta, step="join"))

    canvas, record = _prepare(build)  # Celery folds "chord | finished" into the chord's body
    assert len(canvas.tasks) == 3
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.tasks)
    assert [t.task for t in canvas.body.tasks][-1] == FINISHED_TASK
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.body.tasks)
    assert record.last == "finished"


def test_tasks_without_a_step_id_get_one_and_plain_pipes_work() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return APP.signature("mesh.probe.record", args=(ctx.meta, {})) | APP.signature(
            "mesh.probe.record", args=(ctx.meta, {}))

    canvas, record = _prepare(build)
    assert [s.step for s in record.steps] == ["record-0", "record-1"]
    assert all(t.options["task_id"].startswith(record.run_id + ":") for t in canvas.tasks)


def test_a_builder_that_raises_is_reported_per_request() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        raise KeyError("plan")

    st = _starter(build)
    [err] = st.start_many([StartRequest("w", ENV, "r1")])
    assert err is not None and "KeyError" in err and err.startswith("w:")


@pytest.mark.integration
def test_start_many_sends_every_run_in_one_publish_batch(settings: MeshSettings, r: redis.Redis) -> None:
    app = create_app(settings)
    reg = WorkflowRegistry()
    reg.add(Workflow("w", "1", (On("customer.activity"),),
                     lambda env, ctx: ctx.sig("mesh.probe.record", ctx.meta, {"k": env.entity_key})))
    st = CeleryStarter(app, reg)
    with app.producer_or_acquire() as producer:
        assert producer.supports_batch_publish  # retry_on_timeout dropped for this app
    envs = [Envelope.wrap(CustomerActivity(customer_id=str(i), logins_30d=1, active_days_30d=1))
            for i in range(5)]
    reqs = [StartRequest("w", e, st.run_id("w", e), 1, {"id": e.event_id}) for e in envs]
    assert st.start_many(reqs) == [None] * 5
    queue = Keys(settings.redis.key_prefix).celery_prefix() + "cpu"
    headers = [json.loads(m)["headers"] for m in r.lrange(queue, 0, -1)]
    assert sorted(h["id"] for h in headers) == sorted(f"{req.run_id}:record" for req in reqs)
    assert all(h["task"] == "mesh.probe.record" for h in headers)
    # Fire and forget: Celery's result consumer (per-task SUBSCRIBE) was never started.
    assert app.backend.result_consumer._pubsub is None


def test_every_task_carries_a_short_repr_instead_of_its_arguments() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return chain(ctx.sig("mesh.probe.record", ctx.meta, {"big": "x" * 5000}, step="a"),
                     ctx.sig("mesh.probe.record", ctx.meta, {"secret-ish": "field"}, step="b"))

    canvas = _canvas(build)
    run_id = canvas.tasks[0].args[0]["run_id"]
    assert [t.options["argsrepr"] for t in canvas.tasks] == [f"run {run_id}"] * 2
    assert [t.options["kwargsrepr"] for t in canvas.tasks] == ["", ""]


def _settle(client: redis.Redis, keys: Keys, workflows: list[str]) -> dict[str, int]:
    return {w: RunLedger(client, keys).workflow_stats(w).successes for w in workflows}


@pytest.mark.e2e
def test_a_real_worker_records_each_run_once_whatever_its_shape(
        settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    """Runs are sent BEFORE any worker ever ran on this (fresh) key prefix: the
    starter's ``declare=[]`` must not lose them. Then one worker runs a lone task, a
    chain and a chord; each run is recorded exactly once, the first two without a
    ``mesh.run.finished`` task; a re-sent lone run (same ids) is neither run nor
    counted again (its step's result is memoized)."""
    s = MeshSettings.load({**settings.to_env(), "MESH_CELERY_EXTRA_MODULES": PROBES})
    keys = Keys(s.redis.key_prefix)
    app = create_app(s)

    def lone(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return ctx.sig("mesh.probe.record", ctx.meta, {"shape": "lone"})

    def chained(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return chain(ctx.sig("mesh.probe.record", ctx.meta, {"shape": "chain-a"}, step="a"),
                     ctx.sig("mesh.probe.record", ctx.meta, {"shape": "chain-b"}, step="b")
                     .set(immutable=True))

    def chorded(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        header = group(ctx.sig("mesh.probe.record", ctx.meta, {"shape": f"part{i}"}, step=f"p{i}")
                       for i in range(2))
        body = ctx.sig("mesh.probe.record", ctx.meta, {"shape": "join"}, step="join")
        return chord(header, body.set(immutable=True))

    reg = WorkflowRegistry()
    for name, build in (("lone", lone), ("chained", chained), ("chorded", chorded)):
        reg.add(Workflow(name, "1", (On("customer.activity"),), build))
    st = CeleryStarter(app, reg)
    reqs = [StartRequest(w, ENV, st.run_id(w, ENV), 1, {"id": ENV.event_id}) for w in reg.workflows]
    assert st.start_many(reqs) == [None] * 3
    assert app.conf.task_send_sent_event  # the starter's setting is scoped to its sends

    w = start("worker", ["worker", "-Q", "cpu", "-c", "1"], s, tmp_path / "logs")
    try:
        want = {"lone": 1, "chained": 1, "chorded": 1}
        wait_for(lambda: _settle(r, keys, list(want)) == want, 60, what="three runs recorded")
        shapes = sorted(json.loads(x)["event"]["shape"] for x in r.lrange(keys.ns("probe", "runs"), 0, -1))
        assert shapes == ["chain-a", "chain-b", "join", "lone", "part0", "part1"]
        by_wf = {q.workflow: q.run_id for q in reqs}
        assert app.AsyncResult(f"{by_wf['chorded']}:finished").state == "SUCCESS"
        for wf in ("lone", "chained"):  # recorded by their last task: no bookkeeping task
            assert app.AsyncResult(f"{by_wf[wf]}:finished").state == "PENDING"
            assert RunLedger(r, keys).get_field(by_wf[wf], "state") == "succeeded"
        # Sent again (a redelivered dispatcher batch), then a new run behind it (one
        # worker process: it runs them in order): the re-sent run is not counted again.
        env2 = Envelope.wrap(CustomerActivity(customer_id="2", logins_30d=1, active_days_30d=1))
        again = [reqs[0], StartRequest("lone", env2, st.run_id("lone", env2), 1, {"id": env2.event_id})]
        assert st.start_many(again) == [None, None]
        wait_for(lambda: _settle(r, keys, ["lone"]) == {"lone": 2}, 60, what="the new run recorded")
        assert r.llen(keys.ns("probe", "runs")) == 7  # the re-sent run's step did not run again
        assert _settle(r, keys, list(want)) == want | {"lone": 2}
        assert RunLedger(r, keys).workflow_stats("lone").failures == 0
        counts = RunLedger(r, keys).counts()
        assert counts["started"] == 4 and counts["succeeded"] == 4
    finally:
        w.stop()
