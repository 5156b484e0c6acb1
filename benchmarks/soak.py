"""Soak: a real dispatcher and a real worker under a steady event rate for minutes.

What it shows (docs/reliability.md has a run's numbers): memory of every process
(dispatcher, worker with its pool, redis-server) stays flat after a warm-up, lag stays
bounded at a steady rate, and zero events are lost (every published event's run
executed; every stream entry accounted for by the dispatcher).

Method: a publisher thread appends ``--rate`` ``bench.ping`` events per second (a type of
its own, so no real workflow runs; see benchmarks/probe.py), in ticks of 100 ms. Every
``--sample-s`` seconds it samples each process's RSS (psutil; the worker's pool
children included), the lag (published minus executed runs) and the stream's pending
entries. Memory growth is judged from the end of the first fifth of the run (warm-up:
imports, pools, caches) to the end, as the difference of the medians of the second and
the last fifth (robust to GC sawtooth) and as a least-squares slope in MiB per minute.

Not a CI test. Run: ``.venv/bin/python -m benchmarks.soak --minutes 10``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks._common import (
    accounted,
    embedded_redis,
    emit,
    goal,
    percentile,
    probe_settings,
    start_mesh,
    wait_until,
)
from benchmarks.probe import BenchPing, started_key
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client

GOAL_GROWTH_MB = 20.0
MB = 1024 * 1024


def rss_mb(pid: int, children: bool = True) -> float:
    """RSS of a process (and all its children), in MiB (0 when it is gone)."""
    try:
        p = psutil.Process(pid)
        total = p.memory_info().rss
        for c in p.children(recursive=True) if children else []:
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        return total / MB
    except psutil.Error:
        return 0.0


def slope_per_min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per minute."""
    if len(ts) < 2:
        return 0.0
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den if den else 0.0


def memory_report(ts: list[float], ys: list[float]) -> dict[str, Any]:
    n = len(ys)
    fifth = max(1, n // 5)
    after = slice(fifth, n)
    second, last = ys[fifth:2 * fifth] or ys[:1], ys[n - fifth:]
    growth = statistics.median(last) - statistics.median(second)
    return {"start_mb": round(ys[0], 1), "after_warmup_mb": round(statistics.median(second), 1),
            "end_mb": round(statistics.median(last), 1), "peak_mb": round(max(ys), 1),
            "growth_after_warmup_mb": round(growth, 2),
            "slope_after_warmup_mb_per_min": round(slope_per_min(ts[after], ys[after]), 3),
            "flat": goal(growth, GOAL_GROWTH_MB, higher_is_better=False)}


def run(minutes: float, rate: int, sample_s: float, concurrency: int) -> dict[str, Any]:
    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-soak-") as tmp:
        s = probe_settings(server, MESH_DISPATCHER_BLOCK_MS="100")
        keys = Keys(s.redis.key_prefix)
        r = make_client(s.redis)
        logs = Path(tmp) / "logs"
        worker = start_mesh("worker", ["worker", "-Q", "cpu", "-c", str(concurrency)], s, logs)
        dispatcher = start_mesh("dispatcher", ["dispatcher"], s, logs)
        pub = Publisher(make_client(s.redis), s.streams, keys)
        done_key = started_key(keys.ns)
        published = 0
        errors: list[str] = []
        stop = threading.Event()

        def publisher() -> None:
            nonlocal published
            per_tick = max(1, rate // 10)
            seq, next_t = 0, time.monotonic()
            while not stop.is_set():
                batch = [BenchPing(ping_id=f"p{seq + i}", seq=seq + i) for i in range(per_tick)]
                try:
                    pub.publish_many(batch)
                    published += len(batch)
                    seq += len(batch)
                except Exception as exc:  # report, keep the rate
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                next_t += 0.1
                time.sleep(max(0.0, next_t - time.monotonic()))

        # Warm: both processes ready before the clock starts.
        pub.publish(BenchPing(ping_id="warm"))
        wait_until(lambda: r.llen(done_key) >= 1, 120, "the mesh warmed up")
        pids = {"dispatcher": dispatcher.popen.pid, "worker": worker.popen.pid,
                "redis-server": server.proc.pid if server.proc else 0}
        samples: dict[str, list[float]] = {k: [] for k in [*pids, "worker-main"]}
        ts: list[float] = []
        lags: list[int] = []
        t = threading.Thread(target=publisher, daemon=True)
        t0 = time.monotonic()
        t.start()
        try:
            while time.monotonic() - t0 < minutes * 60:
                time.sleep(sample_s)
                ts.append(time.monotonic() - t0)
                for name, pid in pids.items():
                    samples[name].append(rss_mb(pid))
                samples["worker-main"].append(rss_mb(worker.popen.pid, children=False))
                lags.append(published - (int(r.llen(done_key)) - 1))
                if not (worker.alive() and dispatcher.alive()):
                    break
        finally:
            stop.set()
            t.join(10)
        elapsed = time.monotonic() - t0
        drained = True
        try:
            wait_until(lambda: int(r.llen(done_key)) - 1 >= published, 180, "the tail drained",
                       interval_s=0.5)
        except AssertionError:
            drained = False
        executed_ids = {x.split(b" ", 1)[0] for x in r.lrange(done_key, 0, -1)}
        outcomes = accounted(r, keys, s.streams.partitions)
        alive = {"worker": worker.alive(), "dispatcher": dispatcher.alive()}
        exit_codes = {"dispatcher": dispatcher.stop(), "worker": worker.stop()}
        lost = published + 1 - len(executed_ids)
        return {
            "minutes": round(elapsed / 60, 2), "rate_per_s_target": rate,
            "rate_per_s_achieved": round(published / elapsed, 1), "published": published,
            "publish_errors": len(errors), "publish_error_examples": errors[:3],
            "executed": len(executed_ids) - 1, "lost": lost, "drained": drained,
            "zero_lost": goal(-lost, 0), "outcomes": outcomes,
            "lag_events": {"max": max(lags) if lags else 0, "p99": percentile(lags, 99) if lags else 0,
                           "median": statistics.median(lags) if lags else 0,
                           "last": lags[-1] if lags else 0,
                           "max_seconds_at_rate": round((max(lags) if lags else 0) / rate, 2)},
            "memory": {name: memory_report(ts, ys) for name, ys in samples.items() if ys},
            "samples": {"t_s": [round(x, 1) for x in ts],
                        **{f"{k}_rss_mb": [round(v, 1) for v in ys] for k, ys in samples.items()},
                        "lag_events": lags},
            "alive_at_end": alive, "exit_codes": exit_codes,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=50, help="events per second")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="do not keep benchmarks/results/soak.json")
    a = ap.parse_args()
    result = run(a.minutes, a.rate, a.sample_s, a.concurrency)
    emit("soak", result, write=not a.no_write)


if __name__ == "__main__":
    main()
