"""Dispatcher memory: RSS of one dispatcher process (psutil) over 100,000 events.

The events are published in chunks; after each chunk is accounted for, the
dispatcher's RSS is sampled (and the Celery queue emptied, as no worker runs, so
Redis stays small). Growth is measured from the end of the warm-up (the first 10,000
events: imports, caches and pools settle) to the end, and as the peak above it.
Redis's own memory is reported beside it (dedupe keys and run markers live there, by
design, for ``dispatcher.dedupe_ttl_s``).

Run: ``.venv/bin/python -m benchmarks.memory [--quick]``.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks._common import (
    accounted,
    celery_queue_key,
    dispatcher_available,
    embedded_redis,
    emit,
    goal,
    probe_settings,
    start_mesh,
    wait_until,
)
from benchmarks.probe import BenchPing
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client

GOAL_GROWTH_MB = 20.0
MB = 1024 * 1024


def run(quick: bool = False) -> dict[str, Any]:
    total = 20_000 if quick else 100_000
    warmup = 2_000 if quick else 10_000
    chunk = 2_000 if quick else 5_000
    result: dict[str, Any] = {"unit": "MB", "params": {"events": total, "warmup_events": warmup,
                                                       "chunk": chunk}}
    if not dispatcher_available():
        result["status"] = "mesh dispatcher not available yet"
        return result
    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-bench-logs-") as logs:
        s = probe_settings(server)
        keys = Keys(s.redis.key_prefix)
        client = make_client(s.redis)
        pub = Publisher(client, s.streams, keys)
        queue = celery_queue_key(keys)
        proc = start_mesh("dispatcher", ["dispatcher"], s, Path(logs))
        ps = psutil.Process(proc.popen.pid)
        samples: list[tuple[int, float]] = []
        sent = 0
        baseline_rss = 0.0
        redis_mem: dict[str, int] = {}
        t0 = time.perf_counter()
        try:
            while sent < total:
                n = min(chunk, total - sent)
                pub.publish_many([BenchPing(ping_id=f"m{sent + i}", seq=sent + i) for i in range(n)])
                sent += n
                wait_until(lambda t=sent: sum(accounted(client, keys, s.streams.partitions).values()) >= t,
                           600, f"{sent} events accounted", interval_s=0.1)
                client.delete(queue)
                rss = ps.memory_info().rss / MB
                samples.append((sent, round(rss, 2)))
                if sent == warmup or (not baseline_rss and sent > warmup):
                    baseline_rss = rss
                    redis_mem["after_warmup"] = int(client.info("memory")["used_memory"])
            redis_mem["end"] = int(client.info("memory")["used_memory"])
            if not proc.alive():
                raise RuntimeError("dispatcher died:\n" + proc.output()[-3000:])
        finally:
            proc.stop(signal.SIGTERM, timeout_s=60)
            client.close()
    after = [rss for n, rss in samples if n > warmup]
    growth = samples[-1][1] - baseline_rss
    result.update({
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "rss_after_warmup_mb": round(baseline_rss, 2),
        "rss_end_mb": samples[-1][1],
        "growth_mb": round(growth, 2),
        "peak_above_warmup_mb": round(max(after) - baseline_rss, 2) if after else 0.0,
        "goal": goal(growth, GOAL_GROWTH_MB, higher_is_better=False),
        "samples_events_rss_mb": samples,
        "redis_used_memory_growth_bytes_per_event": round(
            (redis_mem["end"] - redis_mem["after_warmup"]) / max(1, total - warmup), 1),
    })
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="20,000 events (a smoke run)")
    args = ap.parse_args(argv)
    return emit("memory", run(quick=args.quick))


if __name__ == "__main__":
    main()
