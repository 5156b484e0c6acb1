"""The cross-workflow chain, end to end with real processes (a dispatcher and a worker):

customer events -> churn (score with the promoted model) -> ``churn.high_risk``
-> content (a retention message) -> ``content.updated`` -> reembed -> searchable
with ``mesh search``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from tests.support.procs import ROOT, child_env, start, wait_for
from worker_mesh.events.base import Envelope, utcnow
from worker_mesh.events.catalog import CustomerActivity, CustomerCreated, CustomerUpdated
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.churn.lifecycle import ensure_model
from worker_mesh.workers.churn.scoring import services
from worker_mesh.workers.embedding.model import model_version
from worker_mesh.workers.embedding.vectors import VectorStore
from worker_mesh.workers.runtime import Runtime


@pytest.mark.e2e
def test_risky_customer_update_ends_as_searchable_retention_content(
        settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    ensure_model(settings, samples=2000)
    logs = tmp_path / "logs"
    procs = [start("dispatcher", ["dispatcher"], settings, logs),
             start("worker", ["worker", "-Q", "cpu,io,gpu", "--pool", "threads", "-c", "4"],
                   settings, logs)]
    try:
        rt = Runtime(settings)
        t = utcnow()
        cid = "c-at-risk"
        for env in (
            Envelope.wrap(CustomerCreated(customer_id=cid, plan="starter", seats=2, mrr=30.0,
                                          signup_date=(t - timedelta(days=25)).date()),
                          occurred_at=t - timedelta(seconds=2)),
            Envelope.wrap(CustomerActivity(customer_id=cid, logins_30d=0, active_days_30d=0,
                                           support_tickets_30d=7, failed_payments_90d=2),
                          occurred_at=t - timedelta(seconds=1)),
            Envelope.wrap(CustomerUpdated(customer_id=cid, nps=1, version=2), occurred_at=t),
        ):
            rt.publisher.publish(env)

        score = wait_for(lambda: services(rt).results.get(cid), 120, what="churn score stored")
        assert score["score"] >= settings.workflows.churn_high_risk_threshold
        vectors = VectorStore(r, Keys(settings.redis.key_prefix))
        doc = wait_for(lambda: vectors.get(model_version(), f"retention-{cid}"), 180,
                       what="the retention message embedded")
        assert doc.meta["workflow"] == "reembed"

        out = subprocess.run(
            [sys.executable, "-m", "worker_mesh.workers.cli", "search", "keeping a customer who is about to leave",
             "--k", "3", "--json"], cwd=ROOT, env=child_env(settings), capture_output=True, timeout=180)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        hits = json.loads(out.stdout)["hits"]
        assert hits and hits[0]["content_id"] == f"retention-{cid}"
    except AssertionError:
        for p in procs:
            print(f"--- {p.name} ---\n{p.output()[-6000:]}")
        raise
    finally:
        for p in procs:
            p.stop()
