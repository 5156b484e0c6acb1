"""The Redis chaos scenario of the run ledger, shared by the test suite (one run) and
``benchmarks/bench_chaos.py`` (several runs in a row, misses reported).

A publisher publishes ``customer.activity`` events at a steady rate (100/s by default)
to a mesh of one dispatcher and one worker (``-Q io -c 2 --pool threads``), while
``redis-server`` is SIGTERM-restarted (same AOF dir), SIGSTOPped for 5 s, and restarted
again. Every event whose ``publish`` returned must have its effect (written by its run,
``tests.reliability.effects``), ``mesh audit`` must settle on the streams, and the run
ledger must settle with every run succeeded: ``started == succeeded``, nothing in
flight, nothing failed.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.reliability.effects import PRODUCER
from tests.support.procs import start, wait_for
from worker_mesh.events.audit import audit, audit_runs
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.errors import BrokerUnavailable
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

SETTINGS = {
    "MESH_CELERY_EXTRA_MODULES": '["tests.reliability.effects"]',
    "MESH_WORKFLOWS_BUILTIN": "false",
    "MESH_REDIS_SOCKET_TIMEOUT_S": "1",
    "MESH_REDIS_SOCKET_CONNECT_TIMEOUT_S": "1",
    "MESH_REDIS_RETRY_MAX_BACKOFF_S": "1",
    "MESH_RUNS_REDRIVE_QUEUED_AFTER_S": "15",
    "MESH_RUNS_REDRIVE_RUNNING_AFTER_S": '{"standard": 15}',
    "MESH_RUNS_REDRIVE_INTERVAL_S": "1",
    "MESH_RUNS_REDRIVE_MAX": "10",
}


@dataclass
class ChaosResult:
    accepted: int
    publish_errors: int
    missing_effects: int
    runs_started: int
    runs_succeeded: int
    runs_failed: int
    runs_in_flight: int
    runs_redriven: int
    streams_settled: bool
    seconds: float
    dead_letters: list[str]
    """Reason and error of each dead letter (none expected)."""
    streams: list[dict[str, Any]]
    """Each stream's audit (published, accounted, pending, lag) at the end."""

    @property
    def ok(self) -> bool:
        return (self.missing_effects == 0 and self.runs_failed == 0 and self.runs_in_flight == 0
                and self.runs_started == self.runs_succeeded and self.streams_settled)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _env(tag: str, i: int) -> Envelope:
    return Envelope.wrap(CustomerActivity(customer_id=f"{tag}-{i}", logins_30d=1, active_days_30d=1),
                         producer=PRODUCER)


def run_chaos(base: MeshSettings, server: EmbeddedRedis, tmp: Path, *, rate: float = 100.0,
              seconds: float = 30.0, tag: str = "chaos", settle_s: float = 240.0) -> ChaosResult:
    """Publish at ``rate`` for ``seconds`` while Redis is restarted (at 20%), frozen 5 s
    (at 45%) and restarted again (at 70%); then wait for everything to settle."""
    s = MeshSettings.load({**base.to_env(), **SETTINGS})
    keys = Keys(s.redis.key_prefix)
    logs = tmp / "logs"
    procs = [start("worker", ["worker", "-Q", "io,cpu", "-c", "2", "--pool", "threads"], s, logs),
             start("dispatcher", ["dispatcher"], s, logs)]
    r = make_client(s.redis)
    pub = Publisher(make_client(s.redis), s.streams, keys)
    accepted: list[str] = []
    errors = 0
    stop = threading.Event()

    def publisher() -> None:
        nonlocal errors
        i, t0 = 0, time.monotonic()
        while not stop.is_set():
            env = _env(tag, i)
            while not stop.is_set():
                try:
                    pub.publish(env)
                    accepted.append(env.event_id)
                    break
                except BrokerUnavailable:
                    errors += 1
                    time.sleep(0.1)
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))

    t_start = time.monotonic()
    try:
        wait_for(lambda: procs[0].output().count("ready.") >= 1, 60, what="the worker ready")
        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        time.sleep(seconds * 0.2)
        server.restart()
        time.sleep(seconds * 0.25)
        server.signal(signal.SIGSTOP)
        time.sleep(5)
        server.signal(signal.SIGCONT)
        time.sleep(seconds * 0.25)
        server.restart()
        time.sleep(seconds * 0.3)
        stop.set()
        thread.join(30)
        effects_key = keys.ns("rel", "effects")

        def settled() -> bool:
            runs = audit_runs(r, s)
            return runs.settled and all(a.settled for a in audit(r, s))

        try:
            wait_for(settled, settle_s, interval_s=0.5, what="the mesh settled")
        except AssertionError:
            pass  # reported below as misses / runs in flight
        done = {k.decode() for k in r.hkeys(effects_key)}
        runs = audit_runs(r, s)
        return ChaosResult(
            accepted=len(set(accepted)), publish_errors=errors,
            missing_effects=len(set(accepted) - done), runs_started=runs.started,
            runs_succeeded=runs.succeeded, runs_failed=runs.failed, runs_in_flight=runs.in_flight,
            runs_redriven=runs.redriven, streams_settled=all(a.settled for a in audit(r, s)),
            seconds=round(time.monotonic() - t_start, 1),
            dead_letters=[f"{d.reason_code}: {d.reason[:200]} | {d.error[:300]}"
                          for d in DeadLetters(r, keys, s.streams).list(limit=5)],
            streams=[{k: a.as_dict()[k] for k in ("published", "accounted", "pending", "lag",
                                                  "outcomes")} for a in audit(r, s)])
    finally:
        stop.set()
        for p in procs:
            p.stop()
