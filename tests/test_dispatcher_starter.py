"""The canvases the starter sends (no broker needed: they are inspected, not sent)."""

from __future__ import annotations

import json

import pytest
import redis
from celery import chain, chord, group

from chains.registry import On, RunContext, Workflow, WorkflowRegistry
from chains.starter import FAILED_TASK, FINISHED_TASK, CeleryStarter
from events.base import Envelope
from events.catalog import CustomerActivity
from events.routing import StartRequest
from mesh.keys import Keys
from mesh.settings import MeshSettings
from workers.app import create_app

APP = create_app(MeshSettings.load({"MESH_REDIS_URL": "redis://127.0.0.1:1/0"}))
ENV = Envelope.wrap(CustomerActivity(customer_id="1", logins_30d=1, active_days_30d=1))


def _starter(build) -> CeleryStarter:  # type: ignore[no-untyped-def]
    reg = WorkflowRegistry()
    reg.add(Workflow("w", "3", (On("customer.activity"),), build))
    return CeleryStarter(APP, reg, fire_and_forget=False, batch_publish=False)


def _canvas(build):  # type: ignore[no-untyped-def]
    st = _starter(build)
    return st.canvas(StartRequest("w", ENV, st.run_id("w", ENV), 1, {"id": ENV.event_id}))


def _errbacks(sig) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["task"] for e in sig.options.get("link_error", [])]


def test_run_ids_are_deterministic_and_a_replay_is_a_new_attempt() -> None:
    st = _starter(lambda env, ctx: ctx.sig("mesh.probe.record", ctx.meta, {}))
    assert st.run_id("w", ENV) == st.run_id("w", ENV)
    assert st.run_id("w", ENV, "1-0") != st.run_id("w", ENV)


def test_one_task_gets_the_bookkeeping_callback_and_the_errback() -> None:
    canvas = _canvas(lambda env, ctx: ctx.sig("mesh.probe.record", ctx.meta, {}))
    [finished] = canvas.options["link"]
    assert finished["task"] == FINISHED_TASK and finished["immutable"]
    assert finished["args"][0]["workflow_version"] == "3"
    assert _errbacks(canvas) == [FAILED_TASK]
    assert canvas.options["task_id"].endswith(":record")


def test_a_chain_ends_with_the_bookkeeping_task_and_every_task_has_the_errback() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        return chain(ctx.sig("mesh.probe.record", ctx.meta, {}, step="a"),
                     ctx.sig("mesh.probe.record", ctx.meta, {}, step="b"))

    canvas = _canvas(build)
    names = [t.task for t in canvas.tasks]
    assert names[-1] == FINISHED_TASK and len(names) == 3
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.tasks)


def test_chord_header_tasks_get_the_errback_too() -> None:
    def build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
        header = group(ctx.sig("mesh.probe.record", ctx.meta, {}, step=f"s{i}") for i in range(3))
        return chord(header, ctx.sig("mesh.probe.record", ctx.meta, step="join"))

    canvas = _canvas(build)  # Celery folds "chord | finished" into the chord's body
    assert len(canvas.tasks) == 3
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.tasks)
    assert [t.task for t in canvas.body.tasks][-1] == FINISHED_TASK
    assert all(_errbacks(t) == [FAILED_TASK] for t in canvas.body.tasks)


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


def test_the_first_task_carries_a_cheap_bounded_repr_of_its_arguments() -> None:
    canvas = _canvas(lambda env, ctx: ctx.sig("mesh.probe.record", ctx.meta, {"big": "x" * 5000}))
    assert canvas.options["argsrepr"].startswith("({'run_id': ")
    assert len(canvas.options["argsrepr"]) == 1024 and canvas.options["kwargsrepr"] == "{}"
