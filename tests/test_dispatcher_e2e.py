"""End to end: a real dispatcher process and a real Celery worker process, sharing one
real redis-server, run the probe workflows of tests/support/probe_tasks.py."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.procs import ROOT, child_env, start, wait_for
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerActivity, CustomerUpdated
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


class Mesh:
    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis.key_prefix)
        self.r = make_client(settings.redis)
        self.pub = Publisher(self.r, settings.streams, self.keys)
        self.dlq = DeadLetters(self.r, self.keys, settings.streams)

    def runs(self) -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(x) for x in self.r.lrange(self.keys.ns("probe", "runs"), 0, -1)]

    def runs_for(self, key: str) -> list[dict]:  # type: ignore[type-arg]
        return [x for x in self.runs() if x["event"]["key"] == key]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                              env=child_env(self.settings), capture_output=True, text=True,
                              timeout=120)


def probe_settings(redis_server: EmbeddedRedis, tmp: Path, **extra: str) -> MeshSettings:
    return MeshSettings.load({
        "MESH_REDIS_URL": redis_server.url,
        "MESH_REDIS_KEY_PREFIX": "e" + uuid.uuid4().hex[:10],
        "MESH_ARTIFACTS_LOCAL_DIR": str(tmp / "artifacts"),
        "MESH_DISPATCHER_BLOCK_MS": "50",
        "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
        "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]',
        **extra,
    })


@pytest.fixture(scope="module")
def mesh(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("e2e")
    s = probe_settings(redis_server, tmp)
    worker = start("worker", ["worker", "-Q", "cpu", "-c", "1", "--pool", "solo"], s, tmp / "logs")
    dispatcher = start("dispatcher", ["dispatcher"], s, tmp / "logs")
    try:
        yield Mesh(s)
    finally:
        assert dispatcher.stop() == 0, dispatcher.output()[-3000:]
        worker.stop()


def _activity(cid: str) -> CustomerActivity:
    return CustomerActivity(customer_id=cid, logins_30d=5, active_days_30d=4)


def test_a_published_event_runs_its_workflow(mesh: Mesh) -> None:
    event_id = mesh.pub.publish(_activity("a1"))
    [run] = wait_for(lambda: mesh.runs_for("customer:a1"), 60, what="the probe run")
    assert run["event"]["event_id"] == event_id
    assert run["meta"]["workflow"] == "probe"


def test_bad_entries_are_dead_lettered_and_the_rest_processed(mesh: Mesh) -> None:
    stream = mesh.keys.stream(0)
    ok = {"id": "m-ok1", "type": "customer.activity", "v": "1", "ts": "2026-11-23T10:00:00Z",
          "key": "customer:m1", "payload": '{"customer_id":"m1","logins_30d":1,"active_days_30d":1}'}
    mesh.r.xadd(stream, ok)
    mesh.r.xadd(stream, {**ok, "id": "m-bad1", "payload": "{not json"})
    mesh.r.xadd(stream, {**ok, "id": "m-bad2", "type": "customer.teleported"})
    mesh.r.xadd(stream, {**ok, "id": "m-bad3",
                         "payload": "x" * (mesh.settings.streams.max_payload_bytes + 1)})
    mesh.r.xadd(stream, {**ok, "id": "m-bad4", "ts": "yesterday"})
    mesh.r.xadd(stream, {**ok, "id": "m-ok2", "key": "customer:m2",
                         "payload": '{"customer_id":"m2","logins_30d":1,"active_days_30d":1}'})
    wait_for(lambda: mesh.runs_for("customer:m1") and mesh.runs_for("customer:m2"), 60,
             what="the two valid events' runs")

    def dead() -> dict[str, object]:
        return {d.fields.get("id"): d for d in mesh.dlq.list(limit=1000)
                if str(d.fields.get("id", "")).startswith("m-")}

    found = wait_for(lambda: (lambda d: d if len(d) == 4 else None)(dead()), 30, what="4 dead letters")
    assert found["m-bad1"].reason_code == "invalid" and "payload" in found["m-bad1"].reason
    assert found["m-bad2"].reason_code == "unknown_type"
    assert found["m-bad3"].reason_code == "too_large"
    assert found["m-bad4"].reason_code == "invalid" and "'ts'" in found["m-bad4"].reason
    listed = mesh.cli("dlq", "list", "--json", "--limit", "1000")
    assert listed.returncode == 0 and "m-bad2" in listed.stdout


def test_the_same_idempotency_key_runs_once(mesh: Mesh) -> None:
    envs = [Envelope.wrap(_activity("d1"), idempotency_key="d1-v1") for _ in range(3)]
    mesh.pub.publish_many([*envs, _activity("d1-marker")])
    wait_for(lambda: mesh.runs_for("customer:d1-marker"), 60, what="the marker run")
    wait_for(lambda: mesh.runs_for("customer:d1"), 30, what="the deduplicated run")
    outcomes = {k.decode(): int(v) for k, v in mesh.r.hgetall(mesh.keys.outcomes(0)).items()}
    assert outcomes["customer.activity|deduplicated"] >= 2
    assert len(mesh.runs_for("customer:d1")) == 1


def test_many_updates_to_one_entity_make_one_run_after_the_window(mesh: Mesh) -> None:
    mesh.pub.publish_many([CustomerUpdated(customer_id="co1", nps=i % 11) for i in range(25)])
    [run] = wait_for(lambda: mesh.runs_for("customer:co1"), 60, what="the coalesced run")
    assert run["meta"]["coalesced"] == 25
    assert run["meta"]["workflow"] == "probe-coalesced"
    wait_for(lambda: mesh.r.zcard(mesh.keys.coalesce_due(0)) == 0, 30, what="the slot to clear")
    assert len(mesh.runs_for("customer:co1")) == 1


def test_a_failed_run_is_dead_lettered_and_replays_after_a_fix(mesh: Mesh) -> None:
    mesh.pub.publish(_activity("fail-1"))
    # (other workflows of chains/ run on the same events: look at the probe's entry only)
    dl = wait_for(lambda: [d for d in mesh.dlq.list(limit=1000, type_name="customer.activity")
                           if d.reason_code == "workflow_failed" and "workflow probe " in d.reason
                           and d.fields.get("key") == "customer:fail-1"],
                  60, what="the workflow_failed entry")[0]
    assert "probe failure for customer:fail-1" in dl.error and dl.fields["key"] == "customer:fail-1"
    # When the cause is fixed and the event replayed
    mesh.r.set(mesh.keys.ns("probe", "fixed"), "1")
    res = mesh.cli("dlq", "replay", "--id", dl.id)
    assert res.returncode == 0, res.stderr
    # Then it runs (a new attempt: not deduplicated, a new run id) and leaves the DLQ
    [run] = wait_for(lambda: mesh.runs_for("customer:fail-1"), 60, what="the replayed run")
    assert run["meta"]["workflow"] == "probe"
    assert all(d.id != dl.id for d in mesh.dlq.list(limit=1000))
    assert int(mesh.r.hget(mesh.keys.dlq_outcomes, "replayed") or 0) == 1
    replayed = [f for _, f in mesh.r.xrange(mesh.keys.stream(0)) if f.get(b"replay") == dl.id.encode()]
    assert [f[b"route"] for f in replayed] == [b"probe"]  # only the failed workflow re-runs


def test_mesh_audit_is_clean(mesh: Mesh) -> None:
    res = mesh.cli("audit", "--json", "--wait-s", "30")
    assert res.returncode == 0, res.stdout + res.stderr
    [stream] = json.loads(res.stdout)["streams"]
    assert stream["published"] == stream["accounted"] > 0


def test_dispatcher_survives_a_redis_restart(
        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """A Redis restart does not kill the dispatcher: it reconnects and carries on."""
    s = probe_settings(redis_server, tmp_path)
    client = make_client(s.redis)
    pub = Publisher(client, s.streams, Keys(s.redis.key_prefix))
    d = start("dispatcher", ["dispatcher"], s, tmp_path / "logs")
    try:
        pub.publish(_activity("r1"))
        outcomes = Keys(s.redis.key_prefix).outcomes(0)
        wait_for(lambda: client.hget(outcomes, "started"), 60, what="the first start")
        redis_server.restart()
        pub.publish(_activity("r2"))
        wait_for(lambda: int(client.hget(outcomes, "started") or 0) == 2, 60,
                 what="a start after the Redis restart")
        assert d.alive()
    finally:
        assert d.stop() == 0, d.output()[-3000:]
        assert redis.Redis.from_url(redis_server.url).ping()
