"""Fused chains and batched steps in a REAL worker process (threads pool).

Fusion: a chain's next step on the same queue runs inside the task that just finished
(one message for the chain), each step still memoized, with its own result under its own
task id; a fused step that fails is handed back as its own task (its own retries); a
step on another queue is not fused; ``throughput.fuse_chains=false`` turns it off.
Batching: items of concurrent runs share calls of the step's function, each run keeps its
own result, and a poisoned item fails its own run alone.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chain

from tests.support.procs import start, wait_for
from worker_mesh.chains.registry import RunContext, WorkflowRegistry
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

STEP, FLAKY, IO = "mesh.tput.step", "mesh.tput.flaky", "mesh.tput.io_step"


def _three(first: str, second: str, third: str) -> Any:
    def build(env: Envelope, ctx: RunContext) -> Any:
        return chain(ctx.sig(first, None, "a", step="a"), ctx.sig(second, "b", step="b"),
                     ctx.sig(third, "c", step="c"))

    return build


def _batched(env: Envelope, ctx: RunContext) -> Any:
    payload: Any = env.payload
    item: Any = "poison" if payload.customer_id == "poison" else int(payload.customer_id)
    return ctx.sig("mesh.tput.double", item, step="double")


class Mesh:
    def __init__(self, settings: MeshSettings, tmp: Path, **env: str) -> None:
        self.s = MeshSettings.load(settings.to_env() | {
            "MESH_CELERY_EXTRA_MODULES": '["tests.throughput.probe"]', **env})
        self.app = create_app(self.s)
        reg = WorkflowRegistry()
        for name, build in (("fused", _three(STEP, STEP, STEP)), ("flaky", _three(STEP, FLAKY, STEP)),
                            ("crossq", _three(STEP, IO, STEP)), ("batched", _batched)):
            reg.workflow(name, on=["customer.activity"])(build)
        self.keys = Keys(self.s.redis.key_prefix)
        self.r = make_client(self.s.redis)
        self.ledger = RunLedger(self.r, self.keys, self.s.runs)
        self.starter = CeleryStarter(self.app, reg, ledger=self.ledger)
        self.tmp = tmp

    def run(self, workflow: str, customer: str = "1") -> str:
        env = Envelope.wrap(CustomerActivity(customer_id=customer, logins_30d=1,
                                             active_days_30d=1, support_tickets_30d=0))
        run_id = str(uuid.uuid4())
        self.starter.start(StartRequest(workflow, env, run_id))
        return run_id

    def worker(self, concurrency: int = 4) -> Any:
        return start("tput-worker", ["worker", "-Q", "cpu,io", "--pool", "threads", "-c",
                                     str(concurrency)], self.s, self.tmp)

    def state(self, run_id: str) -> str | None:
        return self.ledger.get_field(run_id, "state")

    def steps(self) -> list[str]:
        return [e["step"] for e in self.log()]

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.keys.ns("tput", "log"), 0, -1)]

    def memo(self, run_id: str, step: str) -> Any:
        raw = self.r.hget(self.keys.run_memo(run_id), step)
        return None if raw is None else json.loads(raw)


@pytest.fixture
def mesh(settings: MeshSettings, tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(settings, tmp_path, MESH_THROUGHPUT_FUSE_CHAINS="true")
    yield m
    m.app.close()


def delivered(worker: Any, run_id: str) -> list[str]:
    """The steps of ``run_id`` the worker received as messages, in order (its log)."""
    return re.findall(rf"\[{run_id}:(\w+)\] received", worker.output())


def _done(mesh: Mesh, run_id: str, state: str = "succeeded") -> None:
    wait_for(lambda: mesh.state(run_id) == state, timeout_s=60, what=f"run {state}")


def test_a_same_queue_chain_runs_in_one_task_each_step_memoized(mesh: Mesh) -> None:
    # Given a three-step chain on the cpu queue, when a threads worker runs it
    run_id = mesh.run("fused")
    w = mesh.worker()
    try:
        _done(mesh, run_id)
    finally:
        w.stop()
    # then all three steps ran, once each, from one message (the first step's)
    assert mesh.steps() == ["a", "b", "c"]
    assert delivered(w, run_id) == ["a"], w.output()[-2000:]
    # and each step is memoized in the ledger and has its own result under its own id
    assert [mesh.memo(run_id, s) for s in "abc"] == [["a"], ["a", "b"], ["a", "b", "c"]]
    assert mesh.app.AsyncResult(f"{run_id}:b").get(timeout=10) == ["a", "b"]
    assert mesh.app.AsyncResult(f"{run_id}:c").get(timeout=10) == ["a", "b", "c"]


def test_a_failing_fused_step_is_handed_back_as_its_own_task(mesh: Mesh) -> None:
    run_id = mesh.run("flaky")
    w = mesh.worker()
    try:
        _done(mesh, run_id)
    finally:
        w.stop()
    # b failed inside a's task, then ran (and succeeded) as its own task after its
    # retry delay, and c was fused into b's task
    assert mesh.steps() == ["a", "b", "b", "c"]
    assert delivered(w, run_id) == ["a", "b"], w.output()[-2000:]
    assert mesh.memo(run_id, "c") == ["a", "b", "c"]
    assert int(mesh.ledger.get_field(run_id, "retries") or 0) == 1


def test_steps_on_another_queue_are_not_fused(mesh: Mesh) -> None:
    run_id = mesh.run("crossq")
    w = mesh.worker()
    try:
        _done(mesh, run_id)
    finally:
        w.stop()
    assert mesh.steps() == ["a", "b", "c"]
    assert delivered(w, run_id) == ["a", "b", "c"]


def test_fusion_off_sends_every_step_as_a_message(settings: MeshSettings, tmp_path: Path) -> None:
    mesh = Mesh(settings, tmp_path, MESH_THROUGHPUT_FUSE_CHAINS="false")
    run_id = mesh.run("fused")
    w = mesh.worker()
    try:
        _done(mesh, run_id)
    finally:
        w.stop()
        mesh.app.close()
    assert mesh.steps() == ["a", "b", "c"]
    assert delivered(w, run_id) == ["a", "b", "c"]


def test_batched_step_shares_calls_and_a_poisoned_item_fails_its_run_alone(mesh: Mesh) -> None:
    # Given 12 runs of a batched step (and one poisoned) queued before the worker starts
    runs = {i: mesh.run("batched", str(i)) for i in range(12)}
    poison = mesh.run("batched", "poison")
    w = mesh.worker(concurrency=16)
    try:
        for run_id in runs.values():
            _done(mesh, run_id)
        _done(mesh, poison, "failed")
    finally:
        w.stop()
    # then every run got its own result, memoized as its own step
    assert {i: mesh.memo(r, "double") for i, r in runs.items()} == {i: 2 * i for i in range(12)}
    # the items shared calls of the function, never more than max_items (8) at once
    calls = [json.loads(x) for x in mesh.r.lrange(mesh.keys.ns("tput", "batches"), 0, -1)]
    assert max(len(c) for c in calls) > 1 and max(len(c) for c in calls) <= 8
    assert sorted(x for c in calls for x in c if x != "poison") == list(range(12))
    assert mesh.memo(poison, "double") is None


def test_past_fuse_max_steps_the_chain_continues_with_the_fused_result(
        settings: MeshSettings, tmp_path: Path) -> None:
    mesh = Mesh(settings, tmp_path, MESH_THROUGHPUT_FUSE_CHAINS="true", MESH_THROUGHPUT_FUSE_MAX_STEPS="2")
    run_id = mesh.run("fused")
    w = mesh.worker()
    try:
        _done(mesh, run_id)
    finally:
        w.stop()
        mesh.app.close()
    # a and b in one task; c sent as a message carrying b's result
    assert delivered(w, run_id) == ["a", "c"]
    assert mesh.memo(run_id, "c") == ["a", "b", "c"]
