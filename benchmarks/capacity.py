"""Capacity: the highest rate of customer events the mesh sustains on this machine, the
event -> stored churn score freshness at that rate, and what a workflow run costs
against plain Celery and against calling the functions directly.

1. **Chains** (worker throughput, same run, ``--repeats`` alternating): N churn runs
   (merge -> score -> store) queued while the worker is stopped (SIGSTOP), then timed
   from SIGCONT until every score is stored: through ``mesh worker`` (the default
   configuration, or ``--worker-args``) as the dispatcher starts them, and as a plain
   Celery chain of the same three functions (``benchmarks._plain_chain``: same Celery
   settings and pool, no mesh). Baseline: the three functions called directly, in-process.
2. **Sustained rate**: the real ``mesh dispatcher`` and ``mesh worker``; for each rate in
   ``--rates`` a realistic mix of customer events (``benchmarks._capacity_load``) is
   published at that rate for ``--minutes``; the backlog (``cpu`` queue + the stream's
   undelivered and unacknowledged entries) is sampled every second. A rate is
   *sustained* when the publisher kept its schedule, the backlog drained afterwards and
   it was bounded over the second half of the phase: its least-squares slope <= 2% of the
   rate per second, or it never exceeded 5 s of events (a slope of a backlog of tens of
   messages is noise). The
   highest sustained rate is reported with the freshness p50/p99 of its events
   (publish -> the churn run carrying it ended; the churn workflow coalesces per customer,
   window 2 s, so p50 >= 2 s by design). Phases stop at the first rate not sustained.

Run: ``python -m benchmarks.capacity [--quick] [--minutes 3] [--rates 50,100,200]``
(``mesh bench --only capacity``). The machine is shared: the load average is recorded
with each phase; compare ratios, not absolute rates, between runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import _capacity_load as load
from benchmarks._common import (
    bench_settings,
    celery_queue_key,
    embedded_redis,
    emit,
    goal,
    percentile,
    summary,
)
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerUpdated
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.churn import synth
from worker_mesh.workers.churn.scoring import merge, score, services, store
from worker_mesh.workers.churn.training import train_and_maybe_promote
from worker_mesh.workers.procs import ROOT, Proc, child_env, start, wait_for
from worker_mesh.workers.runtime import Runtime

BOUNDED_S = 5.0
"""A backlog that never exceeds this many seconds of events over a phase's second half
is bounded whatever its (noisy) slope."""


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_s(pids: list[int]) -> float:
    """CPU-seconds (user + system) of these processes and their children so far: stable
    under other people's load, unlike wall-clock rates."""
    total = 0.0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _rss_mb(proc: Proc) -> float:
    try:
        p = psutil.Process(proc.popen.pid)
        return round(sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 2**20, 1)
    except psutil.Error:
        return 0.0


class Bench:
    """The benchmark's Redis, data, workers and senders."""

    def __init__(self, s: MeshSettings, tmp: Path, worker_args: list[str], redis_pid: int) -> None:
        self.s, self.tmp = s, tmp
        self.redis_pid = redis_pid
        self.cpu_per_run = 0.0
        self.rt = Runtime(s)
        self.svc = services(self.rt)
        train_and_maybe_promote(self.svc.registry, samples=3000, seed=1)
        self.app = create_app(s)
        self.registry = load_workflows(s)
        self.starter = CeleryStarter(self.app, self.registry)
        self.worker_args = ["worker", "-Q", "cpu", "-l", "WARNING", *worker_args]
        self.worker = start("mesh-worker", self.worker_args, s, tmp / "logs")
        from benchmarks._plain_chain import make_app

        self.plain = make_app(s)
        self.plain_worker = self._start_plain(worker_args)

    def _start_plain(self, worker_args: list[str]) -> Proc:
        log = self.tmp / "logs" / "plain-worker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        pool = worker_args if worker_args else ["-P", "prefork"]
        if not any(a in ("-P", "--pool") for a in pool):
            pool = ["-P", "prefork", *pool]
        popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "benchmarks._plain_worker", "worker", "-Q", "cpu",
             "-l", "WARNING", "-E", "--without-gossip", "--without-mingle", *pool],
            cwd=ROOT, env=child_env(self.s), stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True)
        return Proc("plain-worker", popen, log)

    def customers(self, tag: str, n: int) -> list[dict[str, Any]]:
        profiles = synth.customers(n, seed=sum(map(ord, tag)), prefix=f"{tag}-")
        for p in profiles:
            self.svc.profiles.put(p)
        return profiles

    def _stored(self, profiles: list[dict[str, Any]]) -> bool:
        pipe = self.rt.redis.pipeline(transaction=False)
        for p in profiles:
            pipe.exists(self.svc.results.key(p["customer_id"]))
        return all(pipe.execute())

    def _drain_rate(self, worker: Proc, profiles: list[dict[str, Any]], send: Any) -> float:
        """Runs/s of ``worker`` draining what ``send`` queued while it was stopped; the
        CPU-seconds per run of the worker and Redis go to ``self.cpu_per_run``."""
        worker.signal(signal.SIGSTOP, group=True)
        try:
            send()
        finally:
            worker.signal(signal.SIGCONT, group=True)
        pids = [worker.popen.pid, self.redis_pid]
        c0, t0 = _cpu_s(pids), time.perf_counter()
        wait_for(lambda: self._stored(profiles), timeout_s=900, interval_s=0.05,
                 what="every score stored")
        wall = time.perf_counter() - t0
        self.cpu_per_run = (_cpu_s(pids) - c0) / len(profiles)
        return len(profiles) / wall

    def mesh_chains(self, profiles: list[dict[str, Any]]) -> float:
        def send() -> None:
            reqs = []
            for p in profiles:
                env = Envelope.wrap(CustomerUpdated(customer_id=p["customer_id"], nps=5, version=2))
                reqs.append(StartRequest("churn", env, self.starter.run_id("churn", env)))
            for k in range(0, len(reqs), 500):
                self.starter.start_many(reqs[k:k + 500])

        return self._drain_rate(self.worker, profiles, send)

    def plain_chains(self, profiles: list[dict[str, Any]]) -> float:
        from celery import chain

        def send() -> None:
            for p in profiles:
                meta, event = _meta_event(p["customer_id"])
                chain(self.plain.signature("plain.churn.merge", args=(meta, event)),
                      self.plain.signature("plain.churn.score", args=(meta,)),
                      self.plain.signature("plain.churn.store", args=(meta,))).apply_async()

        return self._drain_rate(self.plain_worker, profiles, send)

    def direct(self, profiles: list[dict[str, Any]]) -> float:
        t0 = time.perf_counter()
        for p in profiles:
            meta, event = _meta_event(p["customer_id"])
            store(self.rt, score(self.rt, merge(self.rt, meta, event), meta), meta)
        return len(profiles) / (time.perf_counter() - t0)

    def stop(self) -> None:
        for w in (self.worker, self.plain_worker):
            w.stop(timeout_s=30)


def _meta_event(cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    env = Envelope.wrap(CustomerUpdated(customer_id=cid, nps=5, version=2))
    meta = {"run_id": env.event_id, "workflow": "churn", "workflow_version": "1"}
    event = {"event_id": env.event_id, "type": env.type, "occurred_at": env.occurred_at.isoformat(),
             "payload": env.payload.model_dump(mode="json", exclude_none=True)}
    return meta, event


def chains(b: Bench, n: int, repeats: int) -> dict[str, Any]:
    mesh_r, plain_r, direct_r, mesh_cpu, plain_cpu = [], [], [], [], []
    b.mesh_chains(b.customers("warm-m", 20))  # imports, model load, connections
    b.plain_chains(b.customers("warm-p", 20))
    loads = []
    for rep in range(repeats):
        loads.append(_loadavg())
        mesh_r.append(b.mesh_chains(b.customers(f"m{rep}", n)))
        mesh_cpu.append(b.cpu_per_run * 1000)
        plain_r.append(b.plain_chains(b.customers(f"p{rep}", n)))
        plain_cpu.append(b.cpu_per_run * 1000)
        direct_r.append(b.direct(b.customers(f"d{rep}", n)))
    m, p = statistics.median(mesh_r), statistics.median(plain_r)
    mc, pc = statistics.median(mesh_cpu), statistics.median(plain_cpu)
    return {"runs_per_repeat": n, "repeats": repeats, "loadavg_at_repeats": loads,
            "mesh_chain_runs_per_s": summary(mesh_r), "plain_celery_chain_runs_per_s": summary(plain_r),
            "direct_runs_per_s": summary(direct_r),
            "ratio_mesh_vs_plain_per_repeat": [round(x / y, 3) for x, y in zip(mesh_r, plain_r, strict=True)],
            "ratio_mesh_vs_plain": goal(m / p, 0.8),
            "ratio_mesh_vs_direct": round(m / statistics.median(direct_r), 5),
            "cpu_ms_per_run": {"mesh": summary(mesh_cpu), "plain_celery": summary(plain_cpu),
                               "note": "worker process tree + redis-server, during the drain"},
            "ratio_mesh_vs_plain_per_cpu_s": round(pc / mc, 3) if mc else None}


def _window_s(b: Bench) -> float:
    co = b.registry.get("churn").coalesce
    return float(co.window_s) if co is not None else 0.0


def phase(b: Bench, dispatcher: Proc | None, rate: int, minutes: float, customers: int,
          seed: int) -> dict[str, Any]:
    s = b.s
    events = load.mix(rate, minutes * 60, customers, seed, load.new_prefix())
    wf = b.registry.get("churn")
    keys = b.rt.keys
    pub = Publisher(b.rt.redis, s.streams, keys)
    before = {"load": _loadavg(), "worker_rss_mb": _rss_mb(b.worker)}
    sampler = load.Sampler(b.rt.redis, celery_queue_key(keys, "cpu"), keys.stream(0), b.rt.ledger)
    t0 = time.time()
    with sampler:
        sent = load.publish_paced(pub, events, wf.run_id)
    elapsed = time.time() - t0
    t_end = time.time()
    drained = wait_for(lambda: (lambda x: x["queue"] + x["stream"] == 0)(sampler.backlog()),
                       timeout_s=300, interval_s=0.2, what="backlog drained")
    drain_s = time.time() - t_end
    time.sleep(_window_s(b) + 1.0)  # the last coalescing slots fire
    fresh, missing = load.freshness(b.rt.redis, keys, sent)
    half = [x for x in sampler.samples if x["t"] >= t0 + elapsed / 2]
    for x in half:
        x["backlog"] = x["queue"] + x["stream"]
    slope = load.slope_per_s(half, "backlog")
    kept_up = sent.lag_s <= 2.0
    half_max = max((x["backlog"] for x in half), default=0)
    bounded = slope <= 0.02 * rate or half_max <= BOUNDED_S * rate
    sustained = kept_up and bounded and bool(drained)
    backlog = [x["queue"] + x["stream"] for x in sampler.samples]
    return {
        "rate_events_per_s": rate, "events": len(events), "seconds": round(elapsed, 1),
        "published_per_s": round(len(events) / elapsed, 1), "publisher_behind_s": round(sent.lag_s, 2),
        "backlog_max": max(backlog, default=0), "backlog_end": backlog[-1] if backlog else 0,
        "backlog_slope_second_half_per_s": round(slope, 2), "backlog_max_second_half": half_max,
        "drain_s": round(drain_s, 1),
        "sustained": sustained,
        "freshness_p50_s": round(percentile(fresh, 50), 3) if fresh else None,
        "freshness_p99_s": round(percentile(fresh, 99), 3) if fresh else None,
        "events_without_run": missing, "loadavg_before": before["load"], "loadavg_after": _loadavg(),
        "worker_rss_mb_before": before["worker_rss_mb"], "worker_rss_mb_after": _rss_mb(b.worker),
        "dispatcher_alive": dispatcher is not None and dispatcher.alive(),
        "backlog_samples": [[round(x["t"] - t0, 1), x["queue"], x["stream"]] for x in sampler.samples][::5],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 15 s per rate, 3 rates, 150 runs")
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each rate's phase")
    ap.add_argument("--rates", default="50,100,200,400,700,1000", help="events/s, increasing")
    ap.add_argument("--chain-runs", type=int, default=600, help="runs per chain measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--worker-args", default="",
                    help="extra `mesh worker` options (default: its defaults), e.g. '-P prefork -c 2'")
    ap.add_argument("--chains-only", action="store_true", help="skip the sustained-rate phases")
    ap.add_argument("--env", action="append", default=[], metavar="MESH_X_Y=VALUE",
                    help="a setting for every process (experiments), e.g. MESH_THROUGHPUT_FUSE_CHAINS=false")
    ap.add_argument("--name", default="capacity", help="result name (results/<name>.json)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.minutes, a.rates, a.chain_runs, a.repeats, a.customers = 0.25, "25,50,100", 150, 1, 2000
    rates = [int(x) for x in a.rates.split(",") if x.strip()]
    worker_args = a.worker_args.split()
    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-capacity-") as tmp:
        env = dict(kv.split("=", 1) for kv in a.env)
        s = bench_settings(server, MESH_ARTIFACTS_LOCAL_DIR=str(Path(tmp) / "artifacts"),
                           MESH_GPU_DEFERRAL_ENABLED="false", **env)
        assert server.proc is not None
        b = Bench(s, Path(tmp), worker_args, server.proc.pid)
        dispatcher = None
        try:
            chain_result = chains(b, a.chain_runs, a.repeats)
            phases: list[dict[str, Any]] = []
            if a.chains_only:
                rates = []
            else:
                for p in synth.customers(a.customers, seed=5, prefix="c"):
                    b.svc.profiles.put(p)
                dispatcher = start("dispatcher", ["dispatcher", "-l", "WARNING"], s,
                                   Path(tmp) / "logs")
            for k, rate in enumerate(rates):
                phases.append(phase(b, dispatcher, rate, a.minutes, a.customers, seed=k))
                if not phases[-1]["sustained"]:
                    break
        finally:
            if dispatcher is not None:
                dispatcher.stop(timeout_s=30)
            b.stop()
    best = max((p for p in phases if p["sustained"]), key=lambda p: p["rate_events_per_s"], default=None)
    return emit(a.name, {
        "sustained_events_per_s": best["rate_events_per_s"] if best else 0,
        "freshness_p50_s": best["freshness_p50_s"] if best else None,
        "freshness_p99_s": best["freshness_p99_s"] if best else None,
        "plain_celery_chain_runs_per_s": round(chain_result["plain_celery_chain_runs_per_s"]["median"], 1),
        "mesh_chain_runs_per_s": round(chain_result["mesh_chain_runs_per_s"]["median"], 1),
        "direct_runs_per_s": round(chain_result["direct_runs_per_s"]["median"], 1),
        "minutes_per_rate": a.minutes, "rates": rates, "customers": a.customers,
        "worker_command": "mesh " + " ".join(b.worker_args), "settings_env": a.env,
        "chains": chain_result, "phases": phases,
        "goals": {"sustained_ge_1000_per_s": goal(best["rate_events_per_s"] if best else 0, 1000),
                  "freshness_p99_le_window_plus_1_s": goal(
                      (best["freshness_p99_s"] if best else None) or 99.0, _window_s(b) + 1.0,
                      higher_is_better=False)},
    }, write=not a.no_write)


if __name__ == "__main__":
    main()
