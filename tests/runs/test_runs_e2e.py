"""Run history, lineage, replay, promotion and cancellation with a real redis-server, a
real worker and a real dispatcher, driven through the ``mesh`` CLI as an operator would.

Given customers whose churn runs fail (no model yet), when an operator lists failed
churn runs, shows one, trains a model, replays the failed runs, promotes a second
model, cancels a slow run and sends a newer event for a slow one: every step is in the
history with its timings, each score names its model and cause, the rescoring after
the promotion goes through the dispatcher and audit adds up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runs.flows import PRODUCER
from tests.support.procs import ROOT, Proc, child_env, start, wait_for
from worker_mesh.chains.registry import RUN_NAMESPACE
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentDeleted, CustomerActivity, CustomerCreated
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys, partition_of
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = [pytest.mark.e2e]
CUSTOMERS = ("rc-1", "rc-2", "rc-3")


class Mesh:
    def __init__(self, s: MeshSettings, procs: list[Proc], logs: Path) -> None:
        self.s, self.procs, self.logs = s, procs, logs
        self.keys = Keys(s.redis.key_prefix)
        self.r = make_client(s.redis)
        self.pub = Publisher(self.r, s.streams, self.keys)

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                             env=child_env(self.s), capture_output=True, text=True, timeout=300)
        if ok:
            assert res.returncode == 0, res.stdout + res.stderr
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def runs(self, *filters: str) -> list[dict[str, Any]]:
        return self.json("runs", "list", *filters)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def mesh(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("runs-e2e")
    s = MeshSettings.load({
        "MESH_REDIS_URL": redis_server.url, "MESH_REDIS_KEY_PREFIX": "re" + uuid.uuid4().hex[:8],
        "MESH_ARTIFACTS_LOCAL_DIR": str(tmp / "artifacts"),
        "MESH_DISPATCHER_BLOCK_MS": "50", "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
        "MESH_CELERY_EXTRA_MODULES": '["tests.runs.flows"]',
        "MESH_WORKFLOWS_DISABLED": '["content", "reembed"]',
        "MESH_WORKFLOWS_CHURN_SHARD_SIZE": "2", "MESH_GPU_DEFERRAL_ENABLED": "false",
    })
    procs = [start("worker", ["worker", "-Q", "cpu,io,gpu-batch", "-c", "3", "--pool", "threads"],
                   s, tmp / "logs"),
             start("dispatcher", ["dispatcher"], s, tmp / "logs")]
    m = Mesh(s, procs, tmp / "logs")
    yield m
    for p in procs:
        p.stop()
    m.r.close()


def _customer(m: Mesh, cid: str) -> str:
    m.pub.publish(CustomerCreated(customer_id=cid, plan="pro", seats=3, mrr=120.0,
                                  signup_date="2025-01-02"))  # type: ignore[arg-type]
    return m.pub.publish(CustomerActivity(customer_id=cid, logins_30d=2, active_days_30d=1,
                                          support_tickets_30d=4, failed_payments_90d=1))


def test_failed_runs_are_listed_shown_replayed_and_scores_carry_their_lineage(mesh: Mesh) -> None:
    for cid in CUSTOMERS:  # no model is promoted yet: every churn run fails at its score step
        _customer(mesh, cid)
    failed = wait_for(lambda: len(rows := mesh.runs("--workflow", "churn", "--state", "failed")) == 3
                      and rows, 120, interval_s=0.5, what="3 failed churn runs")
    assert {r["entity"] for r in failed} == {f"customer:{c}" for c in CUSTOMERS}
    assert {r["failed_step"] for r in failed} == {"score"}
    shown = mesh.json("runs", "show", failed[0]["run_id"])
    merge, score, store = shown["steps"]
    assert (merge["state"], merge["attempts"]) == ("succeeded", 1)
    assert merge["duration_s"] is not None and merge["first_start"] >= shown["started_at"]
    assert merge["wrote"] == "" and score["state"] == "failed" and "NotFound" in score["error"]
    assert store["state"] == "pending" and store["attempts"] == 0
    assert shown["cause"]["type"] == "customer.activity" and shown["dlq_id"]
    assert mesh.runs("--workflow", "churn", "--failed-at", "merge") == []
    text = mesh.cli("runs", "show", failed[0]["run_id"]).stdout
    assert "score" in text and "NotFound" in text and "attempts 1" in text

    version = mesh.json("train", "--samples", "800", "--seed", "3")["candidate_version"]
    out = mesh.json("replay", "--workflow", "churn", "--where", "state=failed", "--yes")
    assert (out["events"], out["sent"]) == (3, 3)
    for cid in CUSTOMERS:
        res = wait_for(lambda cid=cid: (r := mesh.cli("results", "get", "churn", cid, "--json",
                                                      ok=False)).returncode == 0 and r,
                       120, interval_s=0.5, what=f"score of {cid}")
        doc = json.loads(res.stdout)
        lin = doc["lineage"]
        assert doc["result"]["model_version"] == lin["model_version"] == version
        assert (lin["workflow"], lin["workflow_version"], lin["step"]) == ("churn", "1", "store")
        assert lin["run"]["cause_type"] == "customer.activity" and lin["run"]["state"] == "succeeded"
        replayed = mesh.json("runs", "show", lin["run_id"])
        assert replayed["cause"]["replay"] == out["replay_id"] and replayed["model_version"] == version
        assert replayed["steps"][2]["wrote"] == f"churn:{cid}"
    text = mesh.cli("results", "get", "churn", CUSTOMERS[0]).stdout
    assert f"model {version}" in text and "customer.activity" in text
    made = mesh.json("results", "made-by", version, "--workflow", "churn")
    assert {w for row in made for w in row["wrote"]} == {f"churn:{c}" for c in CUSTOMERS}


def test_a_promotion_rescores_everyone_through_the_dispatcher(mesh: Mesh) -> None:
    second = mesh.json("train", "--samples", "900", "--seed", "11")["candidate_version"]
    out = mesh.json("models", "promote", second)
    run_id = out["rescore_run_id"]
    wait_for(lambda: [r for r in mesh.runs("--workflow", "churn-rescore", "--state", "succeeded")
                      if r["run_id"] == run_id], 180, interval_s=0.5, what="the rescoring run")
    for cid in CUSTOMERS:
        doc = mesh.json("results", "get", "churn", cid)
        assert doc["result"]["model_version"] == second
        assert doc["lineage"]["event_id"] == out["promoted_event_id"]
        assert doc["lineage"]["workflow"] == "churn-rescore"
        assert doc["lineage"]["run"]["cause_type"] == "model.promoted"
    shown = mesh.json("runs", "show", run_id)
    assert shown["model_version"] == second
    assert all(s["state"] == "succeeded" for s in shown["steps"]), shown["steps"]
    audit = mesh.cli("audit", "--wait-s", "60", "--json", ok=False)
    doc = json.loads(audit.stdout)
    assert audit.returncode == 0 and doc["ok"], audit.stdout
    assert sum(s["by_type"].get("model.promoted", {}).get("started", 0) for s in doc["streams"]) == 1


def _slow(mesh: Mesh, content_id: str) -> tuple[str, str]:
    eid = mesh.pub.publish(Envelope.wrap(ContentDeleted(content_id=content_id), producer=PRODUCER))
    return eid, str(uuid.uuid5(RUN_NAMESPACE, f"runs-slow:{eid}"))


def _mark(mesh: Mesh, run_id: str, name: str) -> bytes | None:
    return mesh.r.hget(mesh.keys.ns("runstest", run_id), name)  # type: ignore[return-value]


def test_a_newer_event_supersedes_the_run_in_flight(mesh: Mesh) -> None:
    _, old = _slow(mesh, "slow-3-a")
    wait_for(lambda: _mark(mesh, old, "first_started"), 60, what="the slow first step started")
    _, new = _slow(mesh, "slow-3-a")  # same entity, newer event
    wait_for(lambda: _mark(mesh, new, "second_ran"), 60, what="the newer run done")
    wait_for(lambda: _mark(mesh, old, "first_ended"), 30, what="the superseded step finished")
    time.sleep(1.0)  # room for the superseded run's second step, if it were (wrongly) sent
    assert _mark(mesh, old, "second_ran") is None
    shown = mesh.json("runs", "show", old)
    assert shown["state"] == "cancelled" and shown["superseded_by"] == new
    assert [s["state"] for s in shown["steps"]] == ["succeeded", "pending"]
    assert mesh.json("runs", "show", new)["state"] == "succeeded"


def test_an_explicit_cancel_stops_a_run_before_its_next_step(mesh: Mesh) -> None:
    _, rid = _slow(mesh, "slow-3-b")
    wait_for(lambda: _mark(mesh, rid, "first_started"), 60, what="the slow first step started")
    assert "cancelled run" in mesh.cli("runs", "cancel", rid).stdout
    wait_for(lambda: _mark(mesh, rid, "first_ended"), 30, what="the running step finished")
    time.sleep(1.0)
    assert _mark(mesh, rid, "second_ran") is None
    assert mesh.runs("--state", "cancelled", "--workflow", "runs-slow")[0]["run_id"] == rid
    again = mesh.cli("runs", "cancel", rid, ok=False)
    assert again.returncode == 1 and "not in flight (state: cancelled)" in again.stderr


def test_dlq_list_masks_fields_marked_sensitive(mesh: Mesh) -> None:
    stream = mesh.keys.stream(partition_of("customer:x", mesh.s.streams.partitions))
    mesh.r.xadd(stream, {"id": "sens-1", "type": "customer.updated", "v": "1", "ts": "2026-01-01T00:00:00Z",
                    "payload": json.dumps({"customer_id": "x", "mrr": 4242.5, "seats": 0})})
    dl = wait_for(lambda: [d for d in mesh.json("dlq", "list") if d["fields"].get("id") == "sens-1"],
                  60, what="the invalid event dead-lettered")
    payload = json.loads(dl[0]["fields"]["payload"])
    assert payload == {"customer_id": "x", "mrr": "***", "seats": 0}
