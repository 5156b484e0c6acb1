"""Churn, retraining and rescoring end to end: real worker processes, real Redis, real
training and scoring; runs started by the starter (as the dispatcher does) and, in the
last test, by a real dispatcher reading the event stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from tests.support.procs import Proc, start, wait_for
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope, utcnow
from worker_mesh.events.catalog import (
    CustomerActivity,
    CustomerCreated,
    CustomerUpdated,
    ModelRetrainRequested,
)
from worker_mesh.events.wire import decode
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.churn import rescore, synth
from worker_mesh.workers.churn.scoring import services
from worker_mesh.workers.runtime import Runtime

pytestmark = pytest.mark.e2e
SEEDED = 40


@dataclass
class Mesh:
    settings: MeshSettings
    rt: Runtime
    r: redis.Redis
    starter: CeleryStarter
    worker: Proc
    retrain_env: Envelope
    logs: Path

    def run(self, workflow: str, env: Envelope) -> str:
        run_id = self.starter.run_id(workflow, env)
        self.starter.start(StartRequest(workflow, env, run_id))
        return run_id

    def high_risk_events(self, customer_id: str | None = None) -> list[Envelope]:
        keys, out = Keys(self.settings.redis.key_prefix), []
        for p in range(self.settings.streams.partitions):
            for _, fields in self.r.xrange(keys.stream(p)):
                if fields.get(b"type") == b"churn.high_risk":
                    env = decode(fields, self.settings.streams.max_payload_bytes)
                    if customer_id is None or env.payload.customer_id == customer_id:
                        out.append(env)
        return out


def _settings(server: EmbeddedRedis, tmp: Path) -> MeshSettings:
    return MeshSettings.load({
        "MESH_REDIS_URL": server.url, "MESH_REDIS_KEY_PREFIX": "t" + uuid.uuid4().hex[:10],
        "MESH_ARTIFACTS_LOCAL_DIR": str(tmp / "artifacts"),
        "MESH_WORKFLOWS_CHURN_SHARD_SIZE": "15", "MESH_WORKFLOWS_RETRAIN_SAMPLES": "2000",
        "MESH_GPU_DEFERRAL_ENABLED": "false",
        "MESH_DISPATCHER_BLOCK_MS": "50", "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
    })


@pytest.fixture(scope="module")
def mesh(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A worker on cpu + gpu-batch, 40 seeded customers, and a first model trained by a
    ``model.retrain_requested`` run (which also rescored everyone)."""
    tmp = tmp_path_factory.mktemp("churn-e2e")
    s = _settings(redis_server, tmp)
    rt = Runtime(s)
    for p in synth.customers(SEEDED, seed=21, prefix="seed"):
        services(rt).profiles.put(p)
    app = create_app(s)
    starter = CeleryStarter(app, load_workflows(s), fire_and_forget=False)
    worker = start("worker", ["worker", "-Q", "cpu,gpu-batch", "-c", "1"], s, tmp / "logs")
    r = make_client(s.redis)
    m = Mesh(s, rt, r, starter, worker, Envelope.wrap(ModelRetrainRequested(reason="test", samples=2000)),
             tmp / "logs")
    try:
        m.run("retrain", m.retrain_env)
        wait_for(lambda: services(rt).registry.promoted(), 120, what="first model promoted")
        yield m
    finally:
        worker.stop()
        r.close()


def _events_for(cid: str, risky: bool) -> list[Envelope]:
    p = (synth.risky_profile if risky else synth.loyal_profile)(cid)
    t = utcnow()
    created = CustomerCreated(customer_id=cid, plan=p["plan"], seats=p["seats"], mrr=p["mrr"],
                              signup_date=t.date() - timedelta(days=20 if risky else 1400))
    activity = CustomerActivity(customer_id=cid, logins_30d=p["logins_30d"],
                                active_days_30d=p["active_days_30d"],
                                support_tickets_30d=p["support_tickets_30d"])
    updated = CustomerUpdated(customer_id=cid, nps=p["nps"], version=2)
    return [Envelope.wrap(created, occurred_at=t - timedelta(seconds=2)),
            Envelope.wrap(activity, occurred_at=t - timedelta(seconds=1)),
            Envelope.wrap(updated, occurred_at=t)]


def test_retrain_request_promotes_first_model_and_rescores_everyone(mesh: Mesh) -> None:
    reg = services(mesh.rt).registry
    ptr = reg.promoted()
    assert ptr is not None
    [version] = reg.versions()
    assert version["metrics"]["roc_auc"] > 0.75 and version["provenance"]["workflow"] == "retrain"
    assert version["provenance"]["event_id"] == mesh.retrain_env.event_id
    # The promotion started the rescoring chord over 3 shards of 15: all 40 scored.
    rescore_run = mesh.starter.run_id("churn-rescore", mesh.retrain_env)
    done = wait_for(lambda: rescore.get(mesh.rt, rescore_run), 120, what="rescoring recorded")
    assert done["status"] == "succeeded" and done["shards"] == 3 and done["customers"] == SEEDED
    res = services(mesh.rt).results.get("seed000007")
    assert res is not None and res["model_version"] == ptr.version
    assert res["workflow"] == "churn-rescore" and res["event_id"] == mesh.retrain_env.event_id


def test_redelivered_retrain_request_does_not_train_again(mesh: Mesh) -> None:
    """The same retrain run again (a redelivered event): its training step already
    succeeded in this run, so its memoized result is returned - no second training."""
    reg = services(mesh.rt).registry
    before, history = reg.promoted(), reg.history()
    run_id = mesh.starter.run_id("retrain", mesh.retrain_env)
    meta_key = f"{mesh.settings.redis.key_prefix}:celery:celery-task-meta-{run_id}:train"
    wait_for(lambda: mesh.r.exists(meta_key), 60, what="the first training's result")
    first = json.loads(mesh.r.get(meta_key))["result"]
    mesh.r.delete(meta_key)
    mesh.run("retrain", mesh.retrain_env)  # the same event again
    wait_for(lambda: mesh.r.exists(meta_key), 120, what="the redelivered step answered")
    assert json.loads(mesh.r.get(meta_key))["result"] == first
    assert reg.history() == history  # nothing trained or decided again
    assert reg.promoted() == before and len(reg.versions()) == 1


def test_risky_customer_update_is_scored_and_alerts(mesh: Mesh) -> None:
    risky, loyal = "risky-" + uuid.uuid4().hex[:6], "loyal-" + uuid.uuid4().hex[:6]
    for cid, is_risky in ((risky, True), (loyal, False)):
        *before, updated = _events_for(cid, is_risky)
        for env in before:
            mesh.run("customer-profile", env)
        wait_for(lambda cid=cid: services(mesh.rt).profiles.get(cid).get("_rev") == "2", 60,
                 what="profile merged")
        mesh.run("churn", updated)
    results = services(mesh.rt).results
    got = wait_for(lambda: results.get(risky), 60, what="risky score stored")
    ptr = services(mesh.rt).registry.promoted()
    assert got["score"] >= mesh.settings.workflows.churn_high_risk_threshold
    assert got["model_version"] == ptr.version and got["workflow"] == "churn"  # type: ignore[union-attr]
    assert got["workflow_version"] == "1" and got["profile_revision"] == 3
    [alert] = wait_for(lambda: mesh.high_risk_events(risky), 60, what="churn.high_risk published")
    assert alert.payload.model_version == ptr.version and alert.payload.score == round(got["score"], 6)  # type: ignore[union-attr]
    safe = wait_for(lambda: results.get(loyal), 60, what="loyal score stored")
    assert safe["score"] < 0.2 and mesh.high_risk_events(loyal) == []


def test_redelivered_run_neither_rewrites_nor_realerts(mesh: Mesh) -> None:
    cid = "again-" + uuid.uuid4().hex[:6]
    created, activity, updated = _events_for(cid, True)
    mesh.run("customer-profile", created)
    mesh.run("customer-profile", activity)
    wait_for(lambda: services(mesh.rt).profiles.get(cid).get("_rev") == "2", 60, what="profile merged")
    mesh.run("churn", updated)
    results = services(mesh.rt).results
    first = wait_for(lambda: results.get(cid), 60, what="score stored")
    wait_for(lambda: mesh.high_risk_events(cid), 60, what="alert")
    # The same run again (a redelivery of the event): same ids, idempotent effects.
    run_id = mesh.starter.run_id("churn", updated)
    meta_key = f"{mesh.settings.redis.key_prefix}:celery:celery-task-meta-{run_id}:store"
    wait_for(lambda: mesh.r.exists(meta_key), 60, what="first run's result")
    mesh.r.delete(meta_key)
    mesh.run("churn", updated)
    wait_for(lambda: mesh.r.exists(meta_key), 60, what="redelivered run finished")
    # memoized: the store step did not run again, it answered with its first result
    assert json.loads(mesh.r.get(meta_key))["result"]["status"] == "written"
    assert results.get(cid) == first
    assert len(mesh.high_risk_events(cid)) == 1


def test_rescore_shard_failure_reaches_the_error_handler(mesh: Mesh) -> None:
    reg = services(mesh.rt).registry
    good = reg.promoted()
    assert good is not None
    # A promoted version whose artifact is gone: every shard fails for good (NotFound).
    from worker_mesh.workers.churn import model as M

    d = synth.dataset(400, seed=99)
    broken, _ = M.fit(d.profiles, d.labels)
    reg.register(broken, M.evaluate(broken, d.profiles, d.labels))
    (Path(mesh.settings.artifacts.local_dir) / reg.artifact_key(broken.version)).unlink()
    reg.promote(broken.version, "drill")
    cause = Envelope.wrap(ModelRetrainRequested(reason="rescore drill"))
    try:
        run_id = mesh.run("churn-rescore", cause)
        failed = wait_for(lambda: rescore.get(mesh.rt, run_id), 120, what="error handler ran")
        assert failed["status"] == "failed"
        assert "NotFound" in failed["error"] and broken.version in failed["error"]
    finally:
        reg.promote(good.version, "rollback after drill")


def test_through_the_real_dispatcher(mesh: Mesh) -> None:
    """Events published to the stream -> dispatcher (routing, coalescing) -> worker ->
    score stored -> ``churn.high_risk`` back in the stream."""
    dispatcher = start("dispatcher", ["dispatcher"], mesh.settings, mesh.logs)
    try:
        cid = "bus-" + uuid.uuid4().hex[:6]
        for env in _events_for(cid, True):
            mesh.rt.publisher.publish(env)
        got = wait_for(lambda: services(mesh.rt).results.get(cid), 90, what="score via dispatcher")
        assert got["workflow"] == "churn" and got["score"] >= 0.7
        wait_for(lambda: mesh.high_risk_events(cid), 60, what="alert via dispatcher")
        profile = services(mesh.rt).profiles.get(cid)
        assert profile["plan"] == "free" and profile["nps"] == "1" and profile["logins_30d"] == "0"
    finally:
        dispatcher.stop()


