"""The run ledger past the Celery hand-off, with real redis-server, dispatcher and
worker processes: lost messages, unregistered tasks, killed workers and failing
result-backend writes all end in exactly one recorded outcome per run, and a resumed
run never pays twice for a step that succeeded.

Deadlines are shortened for the tests (``MESH_RUNS_*``): a run waiting 3 s for its next
step, or running a step 6 s, is re-driven; the defaults (docs/reliability.md) are
5 minutes and 5-15 minutes per kind."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.reliability.effects import PRODUCER
from tests.support.procs import Proc, start, wait_for
from worker_mesh.events.audit import audit, audit_runs
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentDeleted, CustomerActivity
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

EFFECTS = '["tests.reliability.effects"]'


def _runs_settings(settings: MeshSettings, **extra: str) -> MeshSettings:
    return MeshSettings.load({
        **settings.to_env(),
        "MESH_CELERY_EXTRA_MODULES": EFFECTS,
        "MESH_RUNS_REDRIVE_QUEUED_AFTER_S": "3",
        "MESH_RUNS_REDRIVE_RUNNING_AFTER_S": '{"standard": 6}',
        "MESH_RUNS_REDRIVE_INTERVAL_S": "0.5",
        "MESH_RUNS_REDRIVE_MAX": "3",
        **extra,
    })


class Provider:
    """A local fake paid API: counts calls per path (``/step1``...)."""

    def __init__(self) -> None:
        calls: Counter[str] = Counter()
        self.calls = calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                calls[self.path.strip("/")] += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.close()


def _deleted(key: str) -> Envelope:
    return Envelope.wrap(ContentDeleted(content_id=key), producer=PRODUCER)


def _activity(cid: str) -> Envelope:
    return Envelope.wrap(CustomerActivity(customer_id=cid, logins_30d=1, active_days_30d=1),
                         producer=PRODUCER)


def _stop_all(procs: list[Proc]) -> None:
    for p in procs:
        p.stop()


def _runs_settled(r, s: MeshSettings) -> bool:  # type: ignore[no-untyped-def]
    runs = audit_runs(r, s)
    return runs.settled and all(a.settled for a in audit(r, s))


def test_a_failed_chain_resumes_at_the_failed_step_without_paying_twice(
        settings: MeshSettings, tmp_path: Path, provider: Provider) -> None:
    s = _runs_settings(settings)
    keys, r = Keys(s.redis.key_prefix), make_client(s.redis)
    r.set(keys.ns("rel", "provider"), provider.url)
    procs = [start("worker", ["worker", "-Q", "io,cpu", "-c", "2", "--pool", "threads"], s,
                   tmp_path / "logs"),
             start("dispatcher", ["dispatcher"], s, tmp_path / "logs")]
    try:
        # Given a 3-step chain whose third step fails for good
        Publisher(r, s.streams, keys).publish(_deleted("steps-1"))
        dlq = DeadLetters(r, keys, s.streams)
        wait_for(lambda: dlq.count() == 1, 60, what="the failed run dead-lettered")
        [dl] = dlq.list()
        assert dl.workflow == "rel-steps" and dl.step == "s3"
        assert "at step s3 (task mesh.rel.step)" in dl.reason and "PermanentError" in dl.error
        assert provider.calls == {"step1": 1, "step2": 1}
        # When the cause is fixed and the dead letter replayed
        r.set(keys.ns("rel", "fixed"), "1")
        dlq.replay([dl.id])
        wait_for(lambda: provider.calls["step3"] == 1, 60, what="step 3 after the replay")
        # Then steps 1 and 2 were not called again: their results were memoized
        wait_for(lambda: _runs_settled(r, s), 30, what="ledger settled")
        assert provider.calls == {"step1": 1, "step2": 1, "step3": 1}
        c = RunLedger(r, keys).counts()  # (content.deleted also starts the built-in reembed)
        assert (c["rel-steps|started"], c["rel-steps|succeeded"], c["rel-steps|failed"]) == (2, 1, 1)
        # --from-start re-runs every step
        r.delete(keys.ns("rel", "fixed"))
        Publisher(r, s.streams, keys).publish(_deleted("steps-2"))
        wait_for(lambda: dlq.count() == 1, 60, what="the second run dead-lettered")
        r.set(keys.ns("rel", "fixed"), "1")
        dlq.replay([dlq.list()[0].id], from_start=True)
        wait_for(lambda: provider.calls["step3"] == 2, 60, what="the full re-run")
        assert provider.calls == {"step1": 3, "step2": 3, "step3": 2}
    finally:
        _stop_all(procs)


def test_a_result_backend_failure_after_success_is_not_a_failed_run(
        settings: MeshSettings, tmp_path: Path) -> None:
    s = _runs_settings(settings)
    keys, r = Keys(s.redis.key_prefix), make_client(s.redis)
    procs = [start("worker", ["worker", "-Q", "io,cpu", "-c", "2", "--pool", "threads"], s,
                   tmp_path / "logs"),
             start("dispatcher", ["dispatcher"], s, tmp_path / "logs")]
    try:
        env = _deleted("backend-1")
        Publisher(r, s.streams, keys).publish(env)
        wait_for(lambda: _runs_settled(r, s) and audit_runs(r, s).started >= 1, 60,
                 what="the run ended")
        c = RunLedger(r, keys).counts()
        assert (c.get("rel-steps|succeeded"), c.get("rel-steps|failed", 0)) == (1, 0)
        assert r.hexists(keys.ns("rel", "effects"), env.event_id)
        time.sleep(2)  # the failure callback (if Celery sends one) has run by now
        assert DeadLetters(r, keys, s.streams).count() == 0
        assert "injected: result backend unreachable" in procs[0].output()
    finally:
        _stop_all(procs)


def test_a_worker_without_the_task_leaves_the_run_for_the_redriver(
        settings: MeshSettings, tmp_path: Path) -> None:
    s = _runs_settings(settings)
    keys, r = Keys(s.redis.key_prefix), make_client(s.redis)
    bare = MeshSettings.load({**s.to_env(), "MESH_CELERY_EXTRA_MODULES": "[]"})
    logs = tmp_path / "logs"
    procs = [start("bare-worker", ["worker", "-Q", "io", "-c", "1", "--pool", "threads"], bare, logs),
             start("dispatcher", ["dispatcher"], s, logs)]
    try:
        env = _activity("unregistered-1")
        Publisher(r, s.streams, keys).publish(env)
        ledger = RunLedger(r, keys, s.runs)
        wait_for(lambda: any(ledger.get(x["run_id"]) and ledger.get(x["run_id"]).get("unregistered")
                             for x in ledger.in_flight()), 60, what="the unknown task noted")
        out = procs[0].output()
        assert "mesh.rel.effect is not registered on this worker" in out
        assert env.event_id not in out and "unregistered-1" not in out  # no payload logged
        assert DeadLetters(r, keys, s.streams).count() == 0
        # When a worker that has the task starts, the re-driver gets the run done
        procs.append(start("worker", ["worker", "-Q", "io", "-c", "1", "--pool", "threads"], s, logs))
        procs[0].stop()
        wait_for(lambda: r.hexists(keys.ns("rel", "effects"), env.event_id), 90,
                 what="the run completed by the right worker")
        wait_for(lambda: _runs_settled(r, s), 30, what="ledger settled")
        assert audit_runs(r, s).succeeded == 1 and audit_runs(r, s).redriven >= 1
    finally:
        _stop_all(procs)


def test_a_run_no_worker_can_run_is_dead_lettered_naming_the_task(
        settings: MeshSettings, tmp_path: Path) -> None:
    s = _runs_settings(settings, MESH_RUNS_REDRIVE_MAX="1")
    keys, r = Keys(s.redis.key_prefix), make_client(s.redis)
    bare = MeshSettings.load({**s.to_env(), "MESH_CELERY_EXTRA_MODULES": "[]"})
    logs = tmp_path / "logs"
    procs = [start("bare-worker", ["worker", "-Q", "io", "-c", "1", "--pool", "threads"], bare, logs),
             start("dispatcher", ["dispatcher"], s, logs)]
    try:
        Publisher(r, s.streams, keys).publish(_activity("unregistered-2"))
        dlq = DeadLetters(r, keys, s.streams)

        def ours() -> list:  # type: ignore[type-arg]
            # (the built-in churn workflows of customer.activity have no cpu worker here:
            # they end stuck too, naming their own first step)
            return [d for d in dlq.list() if d.workflow == "rel-effect"]

        wait_for(ours, 90, what="the stuck run dead-lettered")
        [dl] = ours()
        assert dl.reason_code == "stuck" and dl.step == "effect"
        assert "task mesh.rel.effect" in dl.reason and "not registered on worker" in dl.reason
        wait_for(lambda: audit_runs(r, s).settled, 30, what="every run ended")
        c = RunLedger(r, keys).counts()
        assert (c["rel-effect|started"], c["rel-effect|failed"]) == (1, 1)
    finally:
        _stop_all(procs)


def test_a_killed_worker_s_run_finishes_within_the_redrive_deadline(
        settings: MeshSettings, tmp_path: Path) -> None:
    # The default visibility timeout (1 h) stays: the ledger, not Celery, recovers the
    # run. A step may run 20 s here before its worker is taken for dead.
    s = _runs_settings(settings, MESH_RUNS_REDRIVE_RUNNING_AFTER_S='{"standard": 20}')
    assert s.celery.visibility_timeout_s == 3600
    keys, r = Keys(s.redis.key_prefix), make_client(s.redis)
    logs = tmp_path / "logs"
    victim = start("worker", ["worker", "-Q", "io", "-c", "1"], s, logs)
    procs = [start("dispatcher", ["dispatcher"], s, logs)]
    try:
        env = Envelope.wrap(CustomerActivity(customer_id="slow-kill", logins_30d=80,
                                             active_days_30d=1), producer=PRODUCER)  # an 8 s step
        Publisher(r, s.streams, keys).publish(env)
        wait_for(lambda: r.hexists(keys.ns("rel", "started"), env.event_id), 60, what="the task running")
        victim.stop(signal.SIGKILL)
        t0 = time.monotonic()
        procs.append(start("worker", ["worker", "-Q", "io", "-c", "1"], s, logs))
        wait_for(lambda: r.hexists(keys.ns("rel", "effects"), env.event_id), 90,
                 what="the run finished by the new worker")
        took = time.monotonic() - t0
        assert took < 60, took  # 20 s deadline + 0.5 s interval + 8 s step + worker start
        c = RunLedger(r, keys).counts()
        assert (c["rel-effect|succeeded"], c.get("rel-effect|failed", 0)) == (1, 0)
        assert c["redriven"] >= 1
    finally:
        _stop_all([victim, *procs])


def test_lost_messages_of_a_chord_are_redriven_and_each_part_runs_once(
        settings: MeshSettings, tmp_path: Path) -> None:
    s = _runs_settings(settings)
    keys, r = Keys(s.redis.key_prefix), make_client(s.redis)
    logs = tmp_path / "logs"
    procs = [start("dispatcher", ["dispatcher"], s, logs)]
    try:
        env = _deleted("chord-1")
        Publisher(r, s.streams, keys).publish(env)
        queue = keys.celery_prefix() + "io"
        wait_for(lambda: r.llen(queue) == 3, 30, what="the chord's parts queued")
        r.delete(queue)  # the broker loses them (the Redis-restart window, a lost list)
        procs.append(start("worker", ["worker", "-Q", "io,cpu", "-c", "2", "--pool", "threads"], s, logs))
        wait_for(lambda: r.hget(keys.ns("rel", "joined"), env.event_id) == b"3", 60,
                 what="the re-driven chord joined")
        wait_for(lambda: _runs_settled(r, s), 30, what="ledger settled")
        c = RunLedger(r, keys).counts()
        assert (c["rel-faults|succeeded"], c.get("rel-faults|failed", 0)) == (1, 0)
        assert c["redriven"] >= 1
        assert r.hlen(keys.ns("rel", "parts", env.event_id)) == 3
    finally:
        _stop_all(procs)
