"""Cost of observability: the per-task Celery hooks and one `mesh exporter` scrape.

- hooks: ``task_prerun`` + ``task_postrun`` receivers (metrics + the running-task
  registry in Redis) per task, against a baseline measured in the same run: the two
  Redis commands they cannot avoid (HSET + HDEL) sent directly. Goal: <= 1.5x.
- scrape: one collection of the exporter with 16 partitions (stream + group), 4 queues,
  500 unacked messages, 10 workflows, 20 heartbeats and 50 running tasks, against one
  PING round trip (the scrape's cost in round trips). Goal: <= 100 ms.

Run: ``.venv/bin/python -m benchmarks.bench_monitoring [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from benchmarks._common import bench_settings, embedded_redis, emit, goal
from worker_mesh.chains.registry import Workflow
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client


def _hooks(settings: Any, n: int, repeats: int) -> dict[str, Any]:
    from worker_mesh.monitoring import celery_hooks
    from worker_mesh.workers.app import create_app

    app = create_app(settings)
    task = app.tasks["mesh.run.finished"]
    client = make_client(settings.redis)
    key = celery_hooks.running_key(Keys(settings.redis.key_prefix))
    meta = ({"run_id": "r", "workflow": "probe", "workflow_version": "1"},)
    entry = json.dumps({"task": task.name, "queue": "cpu", "started": time.time(), "limit_s": 1800})

    def with_hooks() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            tid = f"bench-{i}"
            celery_hooks._on_prerun(task=task, task_id=tid, args=meta)
            celery_hooks._on_postrun(task=task, task_id=tid, state="SUCCESS", args=meta)
        return (time.perf_counter() - t0) / n * 1e6

    def baseline() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            client.hset(key, f"bench-{i}", entry)
            client.hdel(key, f"bench-{i}")
        return (time.perf_counter() - t0) / n * 1e6

    hooks_us, base_us = [], []
    for _ in range(repeats):  # alternate, so load changes hit both
        hooks_us.append(with_hooks())
        base_us.append(baseline())
    h, b = statistics.median(hooks_us), statistics.median(base_us)
    return {"hooks_us_per_task": round(h, 1), "baseline_hset_hdel_us": round(b, 1),
            "ratio": round(h / b, 3), "samples_hooks_us": [round(x, 1) for x in hooks_us],
            "samples_baseline_us": [round(x, 1) for x in base_us], "goal": goal(h / b, 1.5,
                                                                                higher_is_better=False)}


def _seed(settings: Any) -> list[Workflow]:
    from worker_mesh.monitoring.celery_hooks import running_key, workers_key

    r = make_client(settings.redis)
    keys = Keys(settings.redis.key_prefix)
    now = time.time()
    for p in range(settings.streams.partitions):
        r.xgroup_create(keys.stream(p), settings.dispatcher.group, id="0", mkstream=True)
        r.xadd(keys.stream(p), {"id": f"e{p}"})
        r.hset(keys.outcomes(p), mapping={"started": 10, "customer.updated|started": 10})
    cp = keys.celery_prefix()
    for q in ("cpu", "io", "gpu", "gpu-batch"):
        r.rpush(f"{cp}{q}", *[b"{}"] * 100)
    r.hset(f"{cp}unacked", mapping={f"tag{i}": json.dumps([{}, "", "cpu"]) for i in range(500)})
    r.hset(workers_key(keys), mapping={f"w{i}@h": json.dumps({"queues": ["cpu"], "ts": now})
                                       for i in range(20)})
    r.hset(running_key(keys), mapping={f"t{i}": json.dumps({"task": "mesh.x", "queue": "cpu",
                                                            "started": now})
                                       for i in range(50)})
    return [Workflow(f"wf{i}", "1", (), lambda env, ctx: None, sla_s=3600)  # type: ignore[arg-type,return-value]
            for i in range(10)]


def _scrape(settings: Any, repeats: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    from worker_mesh.monitoring.collector import MeshCollector

    workflows = _seed(settings)
    client = make_client(settings.redis)
    reg = CollectorRegistry()
    reg.register(MeshCollector(client, settings, lambda: workflows))
    scrape_ms, ping_ms = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate_latest(reg)
        scrape_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        client.ping()
        ping_ms.append((time.perf_counter() - t0) * 1e3)
    s, p = statistics.median(scrape_ms), statistics.median(ping_ms)
    return {"scrape_ms": round(s, 2), "baseline_ping_ms": round(p, 3),
            "scrape_in_round_trips": round(s / p, 1),
            "samples_ms": [round(x, 2) for x in scrape_ms], "goal": goal(s, 100, higher_is_better=False)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, repeats = (300, 3) if args.quick else (2000, 5)
    with embedded_redis() as server:
        settings = bench_settings(server, MESH_STREAMS_PARTITIONS="16")
        hooks = _hooks(settings, n, repeats)
        scrape = _scrape(settings, 5 if args.quick else 20)
    emit("monitoring", {"hooks": hooks, "scrape": scrape,
                        "params": {"tasks": n, "repeats": repeats, "partitions": 16}})


if __name__ == "__main__":
    main()
