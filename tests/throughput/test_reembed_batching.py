"""The built-in re-embedding workflow goes through the GPU micro-batcher in a REAL
worker: the chunks of concurrent documents share one forward pass, and the GPU
dashboard's batch metrics (``mesh_gpu_batch_size``) count every chunk embedded."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from tests.support.procs import start, wait_for
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentCreated
from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app


def _sample(text: str, name: str) -> float:
    m = re.search(rf'^{name}\{{task_type="embed"\}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_reembed_runs_share_forward_passes_and_fill_the_batch_metrics(
        settings: MeshSettings, tmp_path: Path) -> None:
    port = free_port()
    s = MeshSettings.load(settings.to_env() | {
        "MESH_MONITORING_METRICS_PORT": str(port),
        # Long enough a wait that the three documents' chunks always meet in one pass;
        # the pass still runs as soon as all three task threads are in.
        "MESH_GPU_BATCH": '{"embed": {"max_batch": 64, "max_wait_ms": 5000}}',
    })
    app = create_app(s)
    r = make_client(s.redis)
    ledger = RunLedger(r, Keys(s.redis.key_prefix), s.runs)
    starter = CeleryStarter(app, load_workflows(s), ledger=ledger)
    body = "Churn falls when onboarding is short. " * 30
    runs = []
    # Given three documents' re-embedding runs queued before the worker starts
    for i in range(3):
        env = Envelope.wrap(ContentCreated(content_id=f"doc-{i}", title=f"Doc {i}", body=body))
        run_id = starter.run_id("reembed", env)
        starter.start(StartRequest("reembed", env, run_id))
        runs.append(run_id)
    w = start("gpu-worker", ["worker", "-Q", "cpu,gpu", "--pool", "threads", "-c", "3"], s, tmp_path)
    try:
        # When a threads worker (as a GPU worker runs) embeds them
        for run_id in runs:
            wait_for(lambda rid=run_id: ledger.get_field(rid, "state") == "succeeded",
                     timeout_s=180, what="re-embedding run succeeded")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        w.stop()
        app.close()
    embedded = sum(int(ledger_memo["embedded"]) for ledger_memo in (
        app.AsyncResult(f"{run_id}:embed").get(timeout=10) for run_id in runs))
    # Then every embedded chunk went through the micro-batcher, all in one pass
    assert embedded > 3
    assert _sample(text, "mesh_gpu_batch_size_sum") == embedded, w.output()[-2000:]
    assert _sample(text, "mesh_gpu_batch_size_count") == 1
    assert _sample(text, "mesh_gpu_seconds_total") > 0
