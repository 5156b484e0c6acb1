"""SIGKILL a dispatcher in the middle of 10,000 events, restart it.

Given 10,000 published events and a real worker executing their runs, when the
dispatcher is SIGKILLed part-way and a new one started, then ``mesh audit`` accounts
for every entry, every event's effect exists exactly once, written by exactly one run
(the run id derived from the event: a redelivered entry never starts a second run), and
nothing stays pending. Executions may exceed 10,000 only by the redelivered in-flight
batch (at-least-once delivery, idempotent effect): the test reports how many.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.reliability.effects import PRODUCER
from tests.support.procs import ROOT, child_env, start, wait_for
from worker_mesh.chains.registry import RUN_NAMESPACE
from worker_mesh.events.audit import audit
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

N = 10_000


def test_sigkilled_dispatcher_mid_10k_events_loses_nothing_and_runs_each_once(
        settings: MeshSettings, tmp_path: Path) -> None:
    s = MeshSettings.load({**settings.to_env(),
                           "MESH_CELERY_EXTRA_MODULES": '["tests.reliability.effects"]',
                           "MESH_WORKFLOWS_BUILTIN": "false",
                           "MESH_STREAMS_PARTITIONS": "2",
                           "MESH_DISPATCHER_BATCH_COUNT": "200"})
    keys = Keys(s.redis.key_prefix)
    r = make_client(s.redis)
    envs = [Envelope.wrap(CustomerActivity(customer_id=f"k{i}", logins_30d=i % 50,
                                           active_days_30d=i % 30), producer=PRODUCER)
            for i in range(N)]
    ids = Publisher(r, s.streams, keys).publish_many(envs)
    logs = tmp_path / "logs"
    worker = start("worker", ["worker", "-Q", "io", "-c", "8", "--pool", "threads"], s, logs)
    first = start("dispatcher", ["dispatcher", "--consumer", "first"], s, logs)
    try:
        wait_for(lambda: sum(a.accounted for a in audit(r, s)) >= N // 5, 120,
                 interval_s=0.01, what="a fifth of the events dispatched")
        first.stop(signal.SIGKILL)
        at_kill = sum(a.accounted for a in audit(r, s))
        assert at_kill < N, "the dispatcher finished before it was killed: nothing was tested"
        second = start("dispatcher", ["dispatcher", "--consumer", "second"], s, logs)
        try:
            res = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "audit", "--json",
                                  "--wait-s", "150"], cwd=ROOT, env=child_env(s),
                                 capture_output=True, text=True, timeout=200)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
            report = json.loads(res.stdout)
            assert sum(x["published"] for x in report["streams"]) == N
            effects = keys.ns("rel", "effects")
            wait_for(lambda: r.hlen(effects) >= N, 240, interval_s=0.5,
                     what="every event's effect")
        finally:
            assert second.stop() == 0, second.output()[-3000:]
    finally:
        first.stop(signal.SIGKILL)
        worker.stop()
    rows = audit(r, s)
    assert all(a.settled for a in rows), [a.as_dict() for a in rows]
    assert sum(a.accounted for a in rows) == N
    got = {k.decode(): v.decode() for k, v in r.hgetall(keys.ns("rel", "effects")).items()}
    expected = {eid: str(uuid.uuid5(RUN_NAMESPACE, f"rel-effect:{eid}")) for eid in ids}
    assert got == expected  # one effect per event, by the run derived from that event
    assert r.scard(keys.ns("rel", "runs")) == N  # no event had a second run
    executions = int(r.get(keys.ns("rel", "executions")))
    print(f"killed at {at_kill}/{N} accounted; {executions - N} re-executions of the "
          "same runs (idempotent)")
    assert N <= executions <= N + 2 * 200 * s.streams.partitions
