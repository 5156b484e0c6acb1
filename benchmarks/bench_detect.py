"""Time to detect: each silent failure, injected into a running mesh, measured from the
injection to the notification a person receives.

A real mesh on this machine (embedded Redis, `mesh dispatcher`, three workers: cpu+io,
gpu and gpu-batch, `mesh exporter`), Debian's Prometheus scraping every /metrics every
15 s and evaluating the shipped rules every 15 s, Debian's Alertmanager with the
shipped configuration (grouping, inhibition, group_wait 10 s) whose receivers all point
at a webhook receiver written for the benchmark (``benchmarks/_alert_receiver.py``).
Traffic: one probe event per workflow every 5 s (``benchmarks/_detect_probe.py``).

First a healthy run (10 min; ``--quick``: 1 min): any notification is a false alarm.
Then each failure class, one at a time, and its recovery:

======================  =================================================  ===============================
class                   injection                                          expected alert
======================  =================================================  ===============================
dead_letters            an invalid ``bench.detect`` entry in the stream    MeshDeadLetterGrowing
workflow_failing        every detect-failing run fails (a flag)            MeshWorkflowFailing
gpu_urgent_backlog      the gpu worker's tasks hang (a flag)               MeshGpuUrgentBacklogNotDraining
gpu_bulk_backlog        the gpu-batch worker's tasks hang, window open     MeshGpuBulkBacklogNotDraining
no_worker_gpu           SIGKILL the gpu worker (its queue keeps filling)   MeshQueueUnserved{gpu}
no_worker_cpu           SIGKILL the cpu+io worker                          MeshNoWorkerForQueue{cpu}
dispatcher_gone         SIGKILL the dispatcher                             MeshNoDispatcher
stale_workflow          detect-fresh's events stop; measured from the      MeshWorkflowStale
                        moment its 180 s SLA (MESH_WORKFLOWS_SLA_S) ran out
======================  =================================================  ===============================

A stuck run (``MeshRunsStuck``) needs the run ledger's ``mesh_runs_overdue``: listed
under ``not_measured`` until it exists. Goal: every class <= 300 s, no false alarm.

Run: ``python -m benchmarks.bench_detect [--quick] [--classes a,b]`` or
``mesh bench --only detect``. Prints JSON with ``seconds_to_notify`` {class: s} and
``not_notified``; writes ``benchmarks/results/detect.json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _alert_receiver
from benchmarks._common import bench_settings, embedded_redis, emit, goal
from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring import alertstack
from worker_mesh.workers.procs import Proc, start, wait_for

RUN_ALL_TIMEOUT_S = 4200
"""`benchmarks.run_all` gives this module this long (a full run takes about 40 minutes)."""
GOAL_S = 300.0
WAIT_S = 480.0
"""How long a class waits for its notification before it counts as not notified."""
EVENT_EVERY_S = 5.0
FRESH_SLA_S = 180
WORKERS = {"cpu": "cpu,io", "gpu": "gpu", "bulk": "gpu-batch"}


@dataclass
class Mesh:
    settings: MeshSettings
    logs: Path
    ports: dict[str, int]
    procs: dict[str, Proc] = field(default_factory=dict)
    targets: set[str] = field(default_factory=lambda: {"fresh", "failing", "gpu", "bulk"})
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.redis.key_prefix)

    def with_port(self, name: str) -> MeshSettings:
        env = self.settings.to_env() | {"MESH_MONITORING_METRICS_PORT": str(self.ports[name])}
        return MeshSettings.load(env)

    def start(self, name: str) -> None:
        if name == "dispatcher":
            args = ["dispatcher", "--consumer", "bench-dispatcher"]
        elif name == "exporter":
            args = ["exporter", "--address", "127.0.0.1"]
        else:
            args = ["worker", "-Q", WORKERS[name], "-c", "1", "--pool", "solo", "-n", f"{name}@%h"]
        self.procs[name] = start(name, args, self.with_port(name), self.logs)

    def kill(self, name: str) -> None:
        self.procs[name].signal(signal.SIGKILL, group=True)
        self.procs[name].popen.wait(10)

    def flag(self, *parts: str, on: bool) -> None:
        r = make_client(self.settings.redis)
        key = self.keys.ns("detect", *parts)
        if on:
            r.set(key, "1")
        else:
            r.delete(key)


def _settings(server: Any) -> MeshSettings:
    from worker_mesh.chains.loader import load_workflows

    base = bench_settings(server, MESH_CELERY_EXTRA_MODULES='["benchmarks._detect_probe"]')
    names = sorted(load_workflows(base).workflows)
    sla = {n: FRESH_SLA_S if n == "detect-fresh" else 86_400 for n in names}
    return MeshSettings.load(base.to_env() | {
        "MESH_WORKFLOWS_SLA_S": json.dumps(sla),
        "MESH_GPU_OFFPEAK_WINDOWS": '["00:00-24:00 UTC"]',
        "MESH_RUNS_REDRIVE_RUNNING_AFTER_S": json.dumps(dict.fromkeys(
            ("standard", "inference", "api_call", "critical", "training"), RUNNING_DEADLINE_S)),
        "MESH_RUNS_REDRIVE_QUEUED_AFTER_S": str(RUNNING_DEADLINE_S),
    })


def _traffic(mesh: Mesh) -> None:
    """One event per active target every EVENT_EVERY_S, until stopped."""
    from benchmarks._detect_probe import BenchDetect
    from worker_mesh.events.publisher import Publisher

    pub = Publisher(make_client(mesh.settings.redis), mesh.settings.streams, mesh.keys)
    n = 0
    while not mesh.stop.wait(EVENT_EVERY_S):
        n += 1
        events = [BenchDetect(detect_id=f"{t}-{n}", target=t) for t in sorted(mesh.targets)]
        if events:
            try:
                pub.publish_many(events)
            except Exception as exc:  # Redis hiccup: the next tick publishes again
                print(f"publish failed: {exc}", flush=True)


def _firing(prom: str) -> list[dict[str, Any]]:
    res = httpx.get(f"{prom}/api/v1/query", params={"query": 'ALERTS{alertstate="firing"}'},
                    timeout=10).json()
    return [s["metric"] for s in res.get("data", {}).get("result", [])]


def _warm_up(mesh: Mesh, prom: str) -> None:
    from worker_mesh.mesh.runs import RunLedger

    stats = RunLedger(make_client(mesh.settings.redis), mesh.keys)
    wanted = {"detect-fresh", "detect-failing", "detect-gpu", "detect-bulk"}
    wait_for(lambda: wanted <= set(stats.last_success()), 180, 1, "every probe workflow to succeed")

    def up() -> bool:
        res = httpx.get(f"{prom}/api/v1/query", params={"query": "up"}, timeout=10).json()
        vals = [s["value"][1] for s in res.get("data", {}).get("result", [])]
        return len(vals) == len(mesh.ports) - 2 and set(vals) == {"1"}

    wait_for(up, 120, 1, "Prometheus to scrape every target")
    wait_for(lambda: not _firing(prom), 300, 5, "no alert firing before the healthy run")


Inject = Callable[[Mesh], float]


def _inject_dlq(mesh: Mesh) -> float:
    r = make_client(mesh.settings.redis)
    t0 = time.time()
    r.xadd(mesh.keys.stream(0), {"id": "bad-detect", "type": "bench.detect", "v": "1",
                                 "ts": "not a time", "payload": "{}"})
    return t0


def _set_flag(*parts: str) -> Inject:
    def inject(mesh: Mesh) -> float:
        t0 = time.time()
        mesh.flag(*parts, on=True)
        return t0
    return inject


def _kill(name: str) -> Inject:
    def inject(mesh: Mesh) -> float:
        t0 = time.time()
        mesh.kill(name)
        return t0
    return inject


def _stop_fresh(mesh: Mesh) -> float:
    from worker_mesh.mesh.runs import RunLedger

    mesh.targets.discard("fresh")
    time.sleep(EVENT_EVERY_S * 2)  # the last runs in flight finish
    return RunLedger(make_client(mesh.settings.redis), mesh.keys).last_success()["detect-fresh"] \
        + FRESH_SLA_S


def _restart(name: str) -> Callable[[Mesh], None]:
    return lambda mesh: mesh.start(name)


def _clear(*parts: str) -> Callable[[Mesh], None]:
    return lambda mesh: mesh.flag(*parts, on=False)


# class: (injection, recovery, expected alert names, labels the alert must carry)
CLASSES: dict[str, tuple[Inject, Callable[[Mesh], None], tuple[str, ...], dict[str, str]]] = {
    "dead_letters": (_inject_dlq, lambda m: None, ("MeshDeadLetterGrowing",),
                     {"reason": "invalid", "type": "bench.detect"}),
    "workflow_failing": (_set_flag("fail"), _clear("fail"), ("MeshWorkflowFailing",),
                         {"workflow": "detect-failing"}),
    "gpu_urgent_backlog": (_set_flag("stall", "gpu"), _clear("stall", "gpu"),
                           ("MeshGpuUrgentBacklogNotDraining",), {"queue": "gpu"}),
    "gpu_bulk_backlog": (_set_flag("stall", "gpu-batch"), _clear("stall", "gpu-batch"),
                         ("MeshGpuBulkBacklogNotDraining",), {}),
    "no_worker_gpu": (_kill("gpu"), _restart("gpu"), ("MeshQueueUnserved",), {"queue": "gpu"}),
    "no_worker_cpu": (_kill("cpu"), _restart("cpu"), ("MeshNoWorkerForQueue", "MeshQueueUnserved"),
                      {"queue": "cpu"}),
    "dispatcher_gone": (_kill("dispatcher"), _restart("dispatcher"), ("MeshNoDispatcher",), {}),
    "stale_workflow": (_stop_fresh, lambda m: m.targets.add("fresh"), ("MeshWorkflowStale",),
                       {"workflow": "detect-fresh"}),
    # a step that hangs past its running deadline (RUNNING_DEADLINE_S here): re-driven,
    # still no progress -> stuck (timed from the injection, deadline included)
    "stuck_runs": (_set_flag("stall", "gpu"), _clear("stall", "gpu"), ("MeshRunsStuck",),
                   {"workflow": "detect-gpu"}),
}
QUICK = ("dead_letters", "workflow_failing", "dispatcher_gone")
NOT_MEASURED: dict[str, str] = {}
RUNNING_DEADLINE_S = 60
"""The benchmark's re-drive deadline of a running step (``MESH_RUNS_REDRIVE_RUNNING_AFTER_S``;
production defaults are 5-15 minutes per kind: detection is that plus about 1.5 minutes)."""


def _measure(mesh: Mesh, receiver: _alert_receiver.Receiver, name: str) -> dict[str, Any]:
    inject, recover, alerts, labels = CLASSES[name]
    print(f"injecting {name} ...", flush=True)
    started = time.time()
    t0 = inject(mesh)
    found = None
    while found is None and time.time() - t0 < WAIT_S:
        time.sleep(1)
        found = receiver.first(t0, alerts, **labels)
    others = sorted({n.alertname for n in receiver.since(started)} - set(alerts))
    recover(mesh)
    out: dict[str, Any] = {"rule": "/".join(alerts), "also_notified": others,
                           "seconds": None if found is None else round(found.at - t0, 1)}
    print(f"  {name}: {out['seconds']} s", flush=True)
    return out


def _settle(mesh: Mesh) -> None:
    """After a recovery: every process alive again (heartbeats) and the queues drained."""
    from worker_mesh.monitoring.snapshot import take

    r = make_client(mesh.settings.redis)

    def healthy() -> bool:
        snap = take(r, mesh.settings, [])
        return (snap.dispatchers_alive >= 1 and all(snap.workers.get(q, 0) for q in
                                                     ("cpu", "io", "gpu", "gpu-batch"))
                and sum(snap.queues.values()) <= 4)

    wait_for(healthy, 180, 1, "the mesh to recover")
    time.sleep(30)  # Prometheus and Alertmanager see the recovery


def run(quick: bool, classes: list[str]) -> dict[str, Any]:
    receiver = _alert_receiver.start()
    with embedded_redis() as server, tempfile.TemporaryDirectory(prefix="mesh-detect-") as tmp:
        names = ("exporter", "dispatcher", *WORKERS)
        mesh = Mesh(_settings(server), Path(tmp) / "logs",
                    {n: free_port() for n in (*names, "prometheus", "alertmanager")})
        mesh.settings = MeshSettings.load(mesh.settings.to_env() | {
            "MESH_MONITORING_EXPORTER_PORT": str(mesh.ports["exporter"])})
        traffic = threading.Thread(target=_traffic, args=(mesh,), daemon=True)
        try:
            for n in names:
                mesh.start(n)
            traffic.start()
            targets = [f"127.0.0.1:{mesh.ports[n]}" for n in names]
            with alertstack.stack(Path(tmp), targets, receiver.url, mesh.ports["prometheus"],
                                  mesh.ports["alertmanager"]) as st:
                _warm_up(mesh, st.prometheus_url)
                healthy_s = 60.0 if quick else 600.0
                print(f"healthy run: {healthy_s:.0f} s", flush=True)
                t_healthy = time.time()
                time.sleep(healthy_s)
                false_alarms = [{"alertname": n.alertname, "labels": n.labels,
                                 "after_s": round(n.at - t_healthy, 1)}
                                for n in receiver.since(t_healthy)]
                results: dict[str, dict[str, Any]] = {}
                for name in classes:
                    results[name] = _measure(mesh, receiver, name)
                    _settle(mesh)
        finally:
            mesh.stop.set()
            for p in mesh.procs.values():
                if p.alive():
                    p.stop()
            receiver.stop()
    return _report(quick, healthy_s, false_alarms, results)


def _report(quick: bool, healthy_s: float, false_alarms: list[dict[str, Any]],
            results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    seconds = {k: v["seconds"] for k, v in results.items() if v["seconds"] is not None}
    worst = max(seconds.values(), default=0.0)
    return {
        "seconds_to_notify": seconds,
        "not_notified": sorted(k for k, v in results.items() if v["seconds"] is None),
        "not_measured": NOT_MEASURED,
        "rules": {k: v["rule"] for k, v in results.items()},
        "also_notified": {k: v["also_notified"] for k, v in results.items() if v["also_notified"]},
        "healthy_run_s": healthy_s,
        "false_alarms": false_alarms,
        "intervals": {"scrape": alertstack.SCRAPE_INTERVAL,
                      "evaluation": alertstack.EVALUATION_INTERVAL,
                      "alertmanager_group_wait": "10s", "heartbeat_s": 5, "dead_after_s": 30,
                      "events_every_s": EVENT_EVERY_S, "fresh_sla_s": FRESH_SLA_S},
        "goal": {"worst_seconds_to_notify": goal(worst, GOAL_S, higher_is_better=False),
                 "false_alarms": goal(len(false_alarms), 0, higher_is_better=False),
                 "all_notified": all(v["seconds"] is not None for v in results.values())},
        "quick": quick,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"a 1-minute healthy run and only {', '.join(QUICK)}")
    ap.add_argument("--classes", default="", help=f"comma-separated, of: {', '.join(CLASSES)}")
    args = ap.parse_args()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or (
        list(QUICK) if args.quick else list(CLASSES))
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        ap.error(f"unknown class(es): {', '.join(unknown)}")
    emit("detect", run(args.quick, classes))


if __name__ == "__main__":
    main()
