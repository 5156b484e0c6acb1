"""Churn scoring: customers/s through the workflow vs calling the model directly on the
same customers in the same run.

- workflow: one ``churn`` run per customer (the canvas the dispatcher starts:
  merge profile -> score -> store, three Celery tasks on ``cpu``) through a real worker
  process, from the first start until every score is in the result store;
- direct: in this process, features + ``ChurnModel.predict`` per customer (what the
  score step computes), and once as one batch (what a rescoring shard computes);
- rescore: the ``churn-rescore`` chord over every seeded customer (``gpu-batch`` shards),
  customers/s from start to the recorded result.

Workflow and direct are measured alternately, ``--repeats`` times (the machine is
shared: medians, and the ratio within the same run). Each repeat scores new customers.

Run: ``.venv/bin/python -m benchmarks.bench_churn [--customers 300] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import bench_settings, embedded_redis, emit, summary
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerUpdated, ModelRetrainRequested
from worker_mesh.workers.app import create_app
from worker_mesh.workers.churn import features as F
from worker_mesh.workers.churn import rescore, synth
from worker_mesh.workers.churn.scoring import services
from worker_mesh.workers.churn.training import train_and_maybe_promote
from worker_mesh.workers.procs import start, wait_for
from worker_mesh.workers.runtime import Runtime


def workflow_rate(rt: Runtime, starter: CeleryStarter, profiles: list[dict[str, Any]]) -> float:
    """Customers/s: one churn run per customer, until every score is stored."""
    envs = [Envelope.wrap(CustomerUpdated(customer_id=p["customer_id"], nps=p["nps"] or 5, version=2))
            for p in profiles]
    results = services(rt).results
    keys = [results.key(p["customer_id"]) for p in profiles]

    def stored() -> bool:
        pipe = rt.redis.pipeline(transaction=False)
        for k in keys:
            pipe.exists(k)
        return all(pipe.execute())

    t0 = time.perf_counter()
    for env in envs:
        starter.start(StartRequest("churn", env, starter.run_id("churn", env)))
    wait_for(stored, timeout_s=600, interval_s=0.02, what="every score stored")
    return len(profiles) / (time.perf_counter() - t0)


def direct_rates(model: Any, raws: list[dict[str, Any]]) -> tuple[float, float]:
    t0 = time.perf_counter()
    for raw in raws:
        float(model.predict(F.vector(raw))[0])
    single = len(raws) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.predict(F.matrix(raws))
    batch = len(raws) / (time.perf_counter() - t0)
    return single, batch


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2, help="worker processes")
    ap.add_argument("--rescore-customers", type=int, default=5000,
                    help="customers in the store when the rescoring chord runs")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 customers, 1 repeat")
    args = ap.parse_args(argv)
    n, repeats = (40, 1) if args.quick else (args.customers, args.repeats)
    bulk = 200 if args.quick else args.rescore_customers

    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-churn-") as tmp:
        s = bench_settings(server, MESH_ARTIFACTS_LOCAL_DIR=str(Path(tmp) / "artifacts"),
                           MESH_GPU_DEFERRAL_ENABLED="false", MESH_WORKFLOWS_CHURN_SHARD_SIZE="500")
        rt = Runtime(s)
        svc = services(rt)
        trained = train_and_maybe_promote(svc.registry, samples=4000, seed=1)
        _, model = svc.model.get()
        app = create_app(s)
        starter = CeleryStarter(app, load_workflows(s), fire_and_forget=False)
        worker = start("worker", ["worker", "-Q", "cpu,gpu-batch", "-c", str(args.concurrency)],
                       s, Path(tmp) / "logs")
        try:
            # Warm-up: the worker's processes import, load the model, open connections.
            warm = synth.customers(10, seed=999, prefix="warm")
            for p in warm:
                svc.profiles.put(p)
            workflow_rate(rt, starter, warm)

            wf, single, batch = [], [], []
            for r in range(repeats):
                profiles = synth.customers(n, seed=r, prefix=f"r{r}-")
                for p in profiles:
                    svc.profiles.put(p)
                raws = svc.profiles.get_many([p["customer_id"] for p in profiles])
                wf.append(workflow_rate(rt, starter, profiles))
                one, many = direct_rates(model, raws)
                single.append(one)
                batch.append(many)

            have = svc.profiles.count()
            for p in synth.customers(max(0, bulk - have), seed=4242, prefix="bulk-"):
                svc.profiles.put(p)
            total = svc.profiles.count()
            cause = Envelope.wrap(ModelRetrainRequested(reason="benchmark rescore"))
            run_id = starter.run_id("churn-rescore", cause)
            t0 = time.perf_counter()
            starter.start(StartRequest("churn-rescore", cause, run_id))
            done = wait_for(lambda: rescore.get(rt, run_id), timeout_s=600, interval_s=0.02,
                            what="rescoring recorded")
            rescore_rate = total / (time.perf_counter() - t0)
        finally:
            worker.stop()

    ratio = statistics.median(wf) / statistics.median(single)
    return emit("churn", {
        "customers_per_repeat": n,
        "repeats": repeats,
        "worker_concurrency": args.concurrency,
        "model": {"version": trained.candidate_version, "roc_auc": trained.candidate_metrics["roc_auc"]},
        "workflow_customers_per_s": summary(wf),
        "direct_per_customer_per_s": summary(single),
        "direct_batch_per_s": summary(batch),
        "ratio_workflow_vs_direct_per_customer": round(ratio, 6),
        "ratio_workflow_vs_direct_batch": round(statistics.median(wf) / statistics.median(batch), 6),
        "rescore": {"customers": total, "customers_per_s": round(rescore_rate, 1),
                    "ratio_vs_direct_batch": round(rescore_rate / statistics.median(batch), 6),
                    "status": done.get("status"), "shards": done.get("shards")},
        "notes": "workflow = 3 Celery tasks per customer (merge, score, store) through Redis; "
                 "direct = features + predict in-process; rescore = chord of gpu-batch shards",
    })


if __name__ == "__main__":
    main()
