"""Dispatch: workflow starts/s of ONE dispatcher process, beside a plain
``app.signature(...).apply_async()`` loop of the same probe task in the same run.

No worker runs: a *start* is a message on the Celery queue plus the ``started``
outcome. Each repeat stops the dispatcher (SIGSTOP), publishes a backlog of probe
events, resumes it (SIGCONT) and times until every entry is accounted for; so the
time is the dispatcher's alone (read, validate, dedupe, route, start, record, ack).
The baseline loop runs in this process with the same Celery app settings; the repeats
alternate baseline and dispatcher.

Run: ``.venv/bin/python -m benchmarks.dispatch [--quick] [--profile out.prof]``.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import (
    accounted,
    celery_queue_key,
    dispatcher_available,
    embedded_redis,
    emit,
    goal,
    probe_settings,
    rate,
    start_mesh,
    summary,
    wait_until,
)
from benchmarks.probe import TASK, WORKFLOW, BenchPing
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.workers.app import create_app

GOAL_RATE = 3_000.0


def apply_async_loop(app: Any, n: int) -> None:
    """What a hand-written starter would do: one signature and one apply_async per run."""
    for i in range(n):
        run_id = uuid.uuid4().hex
        app.signature(
            TASK, args=({"run_id": run_id, "workflow": WORKFLOW, "workflow_version": "1"},
                        {"event_id": run_id, "key": f"bench:{i}"}),
            task_id=f"{run_id}:ping",
        ).apply_async()


def pings(n: int, offset: int) -> list[BenchPing]:
    return [BenchPing(ping_id=f"p{offset + i}", seq=offset + i) for i in range(n)]


def run(quick: bool = False, profile_to: Path | None = None) -> dict[str, Any]:
    n = 2_000 if quick else 10_000
    repeats = 5
    result: dict[str, Any] = {"unit": "workflow starts/s",
                              "params": {"events_per_repeat": n, "repeats": repeats}}
    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-bench-logs-") as logs:
        s = probe_settings(server)
        keys = Keys(s.redis.key_prefix)
        client = make_client(s.redis)
        pub = Publisher(client, s.streams, keys)
        app = create_app(s)
        queue = celery_queue_key(keys)
        result["params"].update({"batch_count": s.dispatcher.batch_count, "block_ms": s.dispatcher.block_ms,
                                 "partitions": s.streams.partitions})

        def baseline_once() -> float:
            r = rate(n, lambda: apply_async_loop(app, n))
            assert client.llen(queue) == n, "baseline messages missing"
            client.delete(queue)
            return r

        apply_async_loop(app, 200)  # warm-up: connections, kombu bindings
        client.delete(queue)
        base: list[float] = []
        if not dispatcher_available():
            base = [baseline_once() for _ in range(repeats)]
            result["baseline_apply_async"] = {"median": round(summary(base)["median"]),
                                              "samples": summary(base)["samples"]}
            result["dispatcher"] = {"status": "not available yet (mesh dispatcher missing)"}
            return result
        # The dispatcher waits (blocked in XREADGROUP) while the baseline runs; the
        # repeats alternate baseline / dispatcher so that load drift hits both alike.
        proc = start_mesh("dispatcher", ["dispatcher"], s, Path(logs), profile_to=profile_to)
        try:
            sent = 500
            pub.publish_many(pings(sent, 0))
            wait_until(lambda: sum(accounted(client, keys, s.streams.partitions).values()) >= sent,
                       120, "dispatcher warm-up", interval_s=0.05)
            client.delete(queue)
            samples: list[float] = []
            checks: list[dict[str, int]] = []
            for _ in range(repeats):
                base.append(baseline_once())
                before = accounted(client, keys, s.streams.partitions)
                proc.signal(signal.SIGSTOP)
                pub.publish_many(pings(n, sent))
                sent += n
                proc.signal(signal.SIGCONT)
                t0 = time.perf_counter()
                target = sum(before.values()) + n
                wait_until(lambda t=target: sum(accounted(client, keys, s.streams.partitions).values()) >= t,
                           300, "dispatcher backlog")
                samples.append(n / (time.perf_counter() - t0))
                after = accounted(client, keys, s.streams.partitions)
                checks.append({"started": after.get("started", 0) - before.get("started", 0),
                               "messages_on_queue": int(client.llen(queue))})
                client.delete(queue)
            if not proc.alive():
                raise RuntimeError("dispatcher died:\n" + proc.output()[-3000:])
        finally:
            proc.stop(signal.SIGTERM, timeout_s=60)
        base_median = summary(base)["median"]
        result["baseline_apply_async"] = {"median": round(base_median), "samples": summary(base)["samples"]}
        st = summary(samples)
        result["dispatcher"] = {
            "median": round(st["median"]), "samples": st["samples"],
            "ratio_to_apply_async": round(st["median"] / base_median, 2),
            "goal_rate": goal(st["median"], GOAL_RATE),
            "goal_vs_baseline": goal(st["median"] / base_median, 1.0),
            "per_repeat_checks": checks,
        }
        if profile_to is not None:
            result["dispatcher"]["profile"] = str(profile_to)
        client.close()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="run the dispatcher under cProfile and write the stats here")
    args = ap.parse_args(argv)
    return emit("dispatch", run(quick=args.quick, profile_to=args.profile))


if __name__ == "__main__":
    main()
