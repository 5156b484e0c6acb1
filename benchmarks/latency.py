"""Latency: publish -> first task start through the dispatcher, beside plain
``apply_async`` -> task start, at a steady rate, in the same run.

One real worker process (``mesh worker -Q cpu -c 2``) runs the probe task, whose first
statement takes ``time.time()`` and records it in Redis with the event id. The sender
paces itself to a fixed schedule (no drift) and takes ``time.time()`` right before each
``publish`` / ``apply_async``. Phases alternate (apply_async, then dispatcher) ``repeats``
times so that load from other processes hits both alike; percentiles are reported over
all samples and as the median of the per-repeat values.

Before the worker starts, a third measurement takes the worker out: publish -> the run's
task message on the Celery queue, popped by the benchmark itself (``BRPOP``), i.e. the
dispatcher's own share of the latency.

Run: ``.venv/bin/python -m benchmarks.latency [--quick]``.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks._common import (
    celery_queue_key,
    dispatcher_available,
    embedded_redis,
    emit,
    goal,
    percentile,
    probe_settings,
    start_mesh,
    summary,
    wait_until,
)
from benchmarks.probe import TASK, WORKFLOW, BenchPing, started_key
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.workers.app import create_app

GOAL_P50_MS = 5.0
GOAL_P99_MS = 25.0
WORKER_NOTE = ("mesh worker -Q cpu -c 2 (prefork; with -c 1 it drained only ~320 probe tasks/s "
               "here)")
TAIL_MS = GOAL_P99_MS


def tail(reps: list[list[float]], rate_per_s: float) -> dict[str, Any]:
    """Where the slow samples (over the p99 goal) are: how many, and in how many
    *episodes* (runs of slow samples sent less than 100 ms apart). Few long episodes
    mean the worker or the machine stalled now and then (a child replaced, a
    scheduler hiccup); many short ones, a per-message cost."""
    gap = max(1, int(rate_per_s * 0.1))
    slow = episodes = 0
    longest = 0.0
    for rep in reps:  # samples in send order, one every 1/rate s
        idx = [i for i, x in enumerate(rep) if x > TAIL_MS]
        slow += len(idx)
        starts = [i for k, i in enumerate(idx) if k == 0 or i - idx[k - 1] > gap]
        episodes += len(starts)
        for k, i in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(rep)
            longest = max(longest, max(rep[i:end]))
    return {"over_ms": TAIL_MS, "samples": slow, "episodes": episodes,
            "worst_ms": round(longest, 1)}


def paced(rate_per_s: float, duration_s: float, send: Callable[[int], str]) -> dict[str, float]:
    """Call ``send(i)`` on a fixed schedule; returns event id -> send time."""
    n = int(rate_per_s * duration_s)
    sent: dict[str, float] = {}
    start = time.perf_counter() + 0.01
    for i in range(n):
        due = start + i / rate_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.time()
        sent[send(i)] = t
    return sent


def paced_values(rate_per_s: float, duration_s: float, measure: Callable[[int], float]) -> list[float]:
    """Call ``measure(i)`` (which returns one latency) on a fixed schedule."""
    out: list[float] = []
    start = time.perf_counter() + 0.01
    for i in range(int(rate_per_s * duration_s)):
        delay = start + i / rate_per_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        out.append(measure(i))
    return out


def collect(client: redis.Redis, key: str, sent: dict[str, float], timeout_s: float = 120) -> list[float]:
    """Wait for every sent id to be recorded by the task; latencies in ms."""
    seen: dict[str, float] = {}

    def drain() -> bool:
        for raw in client.lpop(key, 10_000) or []:
            eid, t = raw.decode().split()
            seen[eid] = float(t)
        return all(e in seen for e in sent)

    wait_until(drain, timeout_s, "probe task starts", interval_s=0.05)
    return [(seen[e] - t0) * 1000 for e, t0 in sent.items()]


def stats(lat: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(lat, 50), 3), "p90_ms": round(percentile(lat, 90), 3),
            "p99_ms": round(percentile(lat, 99), 3), "max_ms": round(max(lat), 3), "n": len(lat)}


def run(quick: bool = False, rate_per_s: float = 200.0, concurrency: int = 2,
        pool: str = "prefork", env: dict[str, str] | None = None) -> dict[str, Any]:
    repeats = 5
    phase_s = 1.0 if quick else 4.0
    result: dict[str, Any] = {"unit": "ms", "params": {
        "rate_per_s": rate_per_s, "seconds_per_phase": phase_s, "repeats": repeats,
        "total_seconds_per_side": phase_s * repeats,
        "worker": WORKER_NOTE if (concurrency, pool) == (2, "prefork")
        else f"mesh worker -Q cpu -c {concurrency} --pool {pool}"}}
    if env:
        result["params"]["settings_env"] = env
    if not dispatcher_available():
        result["status"] = "mesh dispatcher not available yet"
        return result
    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-bench-logs-") as logs:
        s = probe_settings(server, **(env or {}))
        keys = Keys(s.redis.key_prefix)
        client = make_client(s.redis)
        pub = Publisher(client, s.streams, keys)
        app = create_app(s)
        key = started_key(keys.ns)
        queue = celery_queue_key(keys)
        dispatcher = start_mesh("dispatcher", ["dispatcher"], s, Path(logs))
        worker = None
        try:
            # 1. The dispatcher alone: publish -> task message on the Celery queue, taken
            #    by this process (BRPOP) before any worker runs: the dispatch share.
            def via_publish_to_queue(i: int) -> float:
                t = time.time()
                pub.publish(BenchPing(ping_id=f"q{i}", seq=i))
                if client.brpop([queue], 30) is None:
                    raise RuntimeError("no task message within 30 s")
                return (time.time() - t) * 1000

            for i in range(50):
                via_publish_to_queue(i)
            queue_only = [paced_values(rate_per_s, phase_s, via_publish_to_queue) for _ in range(repeats)]
            # 2. End to end with a real worker.
            worker = start_mesh("worker", ["worker", "-Q", "cpu", "-c", str(concurrency), "--pool", pool],
                                s, Path(logs))
            def via_apply_async(i: int) -> str:
                eid = uuid.uuid4().hex
                app.signature(TASK, args=({"run_id": eid, "workflow": WORKFLOW, "workflow_version": "1"},
                                          {"event_id": eid, "key": f"bench:{i}"}),
                              task_id=f"{eid}:ping").apply_async()
                return eid

            def via_publish(i: int) -> str:
                return pub.publish(BenchPing(ping_id=f"l{i}", seq=i))

            def settle() -> None:
                """Let the worker finish what a phase left queued, so no phase starts
                behind another's backlog."""
                wait_until(lambda: client.llen(queue) == 0, 300, "Celery queue drained", interval_s=0.05)
                time.sleep(0.3)

            # Warm up both paths end to end (worker pool, connections, imports).
            for send in (via_apply_async, via_publish):
                collect(client, key, paced(50, 1.0, send), timeout_s=180)
            sides: dict[str, list[list[float]]] = {"apply_async": [], "dispatcher": []}
            for _ in range(repeats):
                sides["apply_async"].append(collect(client, key, paced(rate_per_s, phase_s, via_apply_async)))
                settle()
                sides["dispatcher"].append(collect(client, key, paced(rate_per_s, phase_s, via_publish)))
                settle()
            for p in (worker, dispatcher):
                if not p.alive():
                    raise RuntimeError(f"{p.name} died:\n" + p.output()[-3000:])
        finally:
            dispatcher.stop(signal.SIGTERM, timeout_s=30)
            if worker is not None:
                worker.stop(signal.SIGTERM, timeout_s=30)
            client.close()
    sides["dispatcher_to_queue_no_worker"] = queue_only
    for side, reps in sides.items():
        flat = [x for rep in reps for x in rep]
        per = [stats(rep) for rep in reps]
        result[side] = {
            "all": stats(flat),
            "median_of_repeats": {"p50_ms": round(summary([p["p50_ms"] for p in per])["median"], 3),
                                  "p99_ms": round(summary([p["p99_ms"] for p in per])["median"], 3)},
            "per_repeat": per,
            "tail": tail(reps, rate_per_s),
        }
    result["dispatcher_to_queue_no_worker"]["note"] = (
        "publish -> task message on the Celery queue (BRPOP by the benchmark), no worker")
    d, b = result["dispatcher"]["all"], result["apply_async"]["all"]
    result["ratio_dispatcher_to_apply_async"] = {"p50": round(d["p50_ms"] / b["p50_ms"], 2),
                                                 "p99": round(d["p99_ms"] / b["p99_ms"], 2)}
    result["goal_p50"] = goal(d["p50_ms"], GOAL_P50_MS, higher_is_better=False)
    result["goal_p99"] = goal(d["p99_ms"], GOAL_P99_MS, higher_is_better=False)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 s phases (a smoke run)")
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    ap.add_argument("--concurrency", "-c", type=int, default=2, help="worker concurrency")
    ap.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    ap.add_argument("--env", action="append", default=[], metavar="MESH_X_Y=VALUE",
                    help="a settings override for every process (repeatable)")
    ap.add_argument("--name", default="", help="result file name (default from the options)")
    args = ap.parse_args(argv)
    name = "latency" if args.rate == 200.0 else f"latency_{args.rate:g}per_s"
    if (args.concurrency, args.pool) != (2, "prefork"):
        name += f"_{args.pool}{args.concurrency}"
    env = dict(kv.split("=", 1) for kv in args.env)
    return emit(args.name or name, run(quick=args.quick, rate_per_s=args.rate,
                                       concurrency=args.concurrency, pool=args.pool, env=env))


if __name__ == "__main__":
    main()
