"""Workflow failures end somewhere visible, with a real dispatcher and a real worker.

- A chord whose header task fails: the run's error handler dead-letters the event with
  the failing task and its error, the join never runs, its result is a failure (no
  caller waits forever) and the chord's counters expire.
- A poison event (its workflow raises on every attempt): after the task kind's retries
  it is in the dead-letter stream with the last error; once the cause is fixed,
  ``mesh dlq replay`` runs it and its effect appears.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.reliability.effects import PRODUCER
from tests.support.procs import ROOT, Proc, child_env, start, wait_for
from worker_mesh.chains.registry import RUN_NAMESPACE
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentDeleted
from worker_mesh.events.dlq import DeadLetter, DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


class Mesh:
    def __init__(self, s: MeshSettings, procs: list[Proc]) -> None:
        self.s, self.procs = s, procs
        self.keys = Keys(s.redis.key_prefix)
        self.r = make_client(s.redis)
        self.pub = Publisher(self.r, s.streams, self.keys)
        self.dlq = DeadLetters(self.r, self.keys, s.streams)

    def publish(self, content_id: str) -> str:
        return self.pub.publish(Envelope.wrap(ContentDeleted(content_id=content_id),
                                              producer=PRODUCER))

    def dead(self, event_id: str) -> DeadLetter | None:
        return next((d for d in self.dlq.list(limit=10_000)
                     if d.fields.get("id") == event_id and "rel-faults" in d.reason), None)


@pytest.fixture(scope="module")
def mesh(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("wf-faults")
    s = MeshSettings.load({
        "MESH_REDIS_URL": redis_server.url, "MESH_REDIS_KEY_PREFIX": "wf" + uuid.uuid4().hex[:8],
        "MESH_ARTIFACTS_LOCAL_DIR": str(tmp / "artifacts"),
        "MESH_DISPATCHER_BLOCK_MS": "50", "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
        "MESH_CELERY_EXTRA_MODULES": '["tests.reliability.effects"]',
    })
    procs = [start("worker", ["worker", "-Q", "io,cpu", "-c", "2", "--pool", "threads"], s,
                   tmp / "logs"),
             start("dispatcher", ["dispatcher"], s, tmp / "logs")]
    yield Mesh(s, procs)
    for p in procs:
        p.stop()


def test_chord_whose_header_fails_reaches_the_error_handler(mesh: Mesh) -> None:
    ok, bad = mesh.publish("chord-ok-1"), mesh.publish("chord-bad-1")
    joined = mesh.keys.ns("rel", "joined")
    wait_for(lambda: mesh.r.hexists(joined, ok), 90, what="the good chord's join")
    dl = wait_for(lambda: mesh.dead(bad), 90, what="the failed chord dead-lettered")
    assert dl.reason_code == "workflow_failed"
    assert "mesh.rel.part" in dl.reason and "chord part 1 of content:chord-bad-1 failed" in dl.error
    assert not mesh.r.hexists(joined, bad)
    # The chord's outcome (its body: join | finished, the run's last task) is a failure
    # (ChordError), so nothing waiting on the run waits forever.
    run_id = str(uuid.uuid5(RUN_NAMESPACE, f"rel-faults:{bad}"))
    app = create_app(mesh.s)
    assert app.AsyncResult(f"{run_id}:part1").state == "FAILURE"
    wait_for(lambda: app.AsyncResult(f"{run_id}:finished").state == "FAILURE", 60,
             what="the chord body marked failed")
    assert "ChordError" in repr(app.AsyncResult(f"{run_id}:finished").result)
    # Every chord counter left in Redis expires.
    counters = [k for k in mesh.r.scan_iter(match=mesh.keys.celery_prefix() + "*chord*")]
    assert all(mesh.r.ttl(k) > 0 for k in counters), counters
    # Exactly one dead letter for the run, however many of its tasks failed.
    assert sum(1 for d in mesh.dlq.list(limit=10_000) if d.fields.get("id") == bad) == 1


def test_poison_event_is_dead_lettered_after_its_retries_and_replays_once_fixed(
        mesh: Mesh) -> None:
    eid = mesh.publish("poison-1")
    dl = wait_for(lambda: mesh.dead(eid), 90, what="the poison event dead-lettered")
    attempts = int(mesh.r.get(mesh.keys.ns("rel", "poison-attempts")))
    assert attempts == 3  # the first run and the kind's 2 retries
    assert "poison: cannot handle content:poison-1" in dl.error
    assert "mesh.rel.poison" in dl.reason
    # When the cause is fixed and the operator replays it,
    mesh.r.set(mesh.keys.ns("rel", "fixed"), "1")
    res = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "dlq", "replay", "--id", dl.id],
                         cwd=ROOT, env=child_env(mesh.s), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # then it runs (a new attempt: a new run id) and leaves the DLQ.
    effects = mesh.keys.ns("rel", "effects")
    wait_for(lambda: mesh.r.hexists(effects, eid), 90, what="the replayed run's effect")
    assert mesh.r.hget(effects, eid).decode() != str(uuid.uuid5(RUN_NAMESPACE, f"rel-faults:{eid}"))
    assert mesh.dead(eid) is None
    assert int(mesh.r.get(mesh.keys.ns("rel", "poison-attempts"))) == 4
