"""The test kit for a team's workflows: a private redis-server, a real dispatcher and a
real worker (subprocesses), and ``publish_and_wait(event)``.

As a pytest plugin (``pytest -p worker_mesh.testing``, or in a ``conftest.py``:
``pytest_plugins = ["worker_mesh.testing"]``)::

    MESH_MODULES = ["orders.workflows"]      # in the test module: what to load

    def test_an_order_is_scored(mesh):       # the fixture starts everything
        runs = mesh.publish_and_wait(OrderPlaced(order_id="o-1", ...))
        assert runs["order-scoring"].state == "succeeded"
        assert runs["order-scoring"].result == 0.8   # the last step's result

Or without pytest: ``with Harness(["orders.workflows"]) as mesh: ...``.

For fast tests of a workflow's logic, ``mesh_eager`` (``EagerMesh``) runs the canvas in
the test's own process with Celery's eager mode: retries (at once) and chords work::

    def test_scoring_logic(mesh_eager):
        assert mesh_eager.run(OrderPlaced(order_id="o-1", ...))["order-scoring"] == 0.8

Each harness has its own key prefix on a redis-server of its own (started from the
``redis-server`` binary on a free port), so tests never see each other's keys.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker_mesh.chains.loader import load_workflows
from worker_mesh.events.audit import audit, audit_runs
from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.procs import Proc, start

__all__ = ["EagerMesh", "Harness", "RunResult", "mesh", "mesh_eager", "mesh_redis"]

ENDED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class RunResult:
    """How one run ended."""

    run_id: str
    workflow: str
    state: str
    """succeeded, failed or cancelled (or started: still running at the timeout)."""
    result: Any
    """The last step's result (JSON), when it succeeded."""
    reason: str
    """Why it failed (the step, the task, the error)."""


class Harness:
    """A private mesh: redis-server, one dispatcher, one worker on every queue."""

    def __init__(self, modules: Sequence[str] = (), *, settings: dict[str, str] | None = None,
                 server: EmbeddedRedis | None = None, concurrency: int = 4,
                 env: dict[str, str] | None = None) -> None:
        self._own_server = server is None
        self._tmp = tempfile.TemporaryDirectory(prefix="mesh-test-")
        self.server = server or EmbeddedRedis(Path(self._tmp.name) / "redis")
        self.modules = list(modules)
        self.extra = dict(settings or {})
        self.concurrency = concurrency
        self.env = dict(env or {})
        """Environment of the worker and dispatcher processes besides ``MESH_*`` (your
        own configuration, e.g. an API's URL)."""
        self.procs: list[Proc] = []

    def start(self) -> Harness:
        if self._own_server:
            self.server.start()
        env = {**_base_env(self), **self.extra}
        self.settings = MeshSettings.load(env)
        self.keys = Keys(self.settings.redis.key_prefix)
        self.redis = make_client(self.settings.redis)
        self.registry = load_workflows(self.settings)
        self.publisher = Publisher(self.redis, self.settings.streams, self.keys)
        self.ledger = RunLedger(self.redis, self.keys, self.settings.runs)
        logs = Path(self._tmp.name) / "logs"
        self.procs = [
            start("worker", ["worker", "-Q", "cpu,io,gpu,gpu-batch", "-c", str(self.concurrency),
                             "--pool", "threads"], self.settings, logs, self.env),
            start("dispatcher", ["dispatcher"], self.settings, logs, self.env),
        ]
        return self

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs = []
        if self._own_server:
            self.server.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- using it ------------------------------------------------------------------------
    def publish(self, event: Event | Envelope) -> Envelope:
        env = event if isinstance(event, Envelope) else Envelope.wrap(event, producer="test")
        self.publisher.publish(env)
        return env

    def publish_and_wait(self, event: Event | Envelope, *, timeout_s: float = 60.0
                         ) -> dict[str, RunResult]:
        """Publish, then wait until every run the event starts directly (not coalesced)
        has ended; returns them by workflow name."""
        env = self.publish(event)
        runs = {r.workflow: self.registry.get(r.workflow).run_id(env)
                for r in self.registry.route(env) if r.coalesce is None}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = {wf: self.run(run_id, wf) for wf, run_id in runs.items()}
            if all(r.state in ENDED for r in got.values()):
                return got
            time.sleep(0.05)
        return {wf: self.run(run_id, wf) for wf, run_id in runs.items()}

    def run(self, run_id: str, workflow: str = "") -> RunResult:
        rec = self.ledger.get(run_id) or {}
        state = rec.get("state", "not started")
        result = None
        if state == "succeeded":
            steps = [row[0] for row in RunLedger.steps_of(rec)]
            last = rec.get("last", "")
            if last == "finished" and len(steps) > 1:  # bookkeeping after a chord: its body
                last = steps[-2]
            raw = self.redis.hget(self.keys.run_memo(run_id), last)
            result = json.loads(raw) if raw not in (None, b"-") else None
        return RunResult(run_id, rec.get("workflow", workflow), state, result,
                         rec.get("reason", ""))

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until every event is accounted for and no run is in flight (coalesced
        runs and follow-up workflows included); True when it settled."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(a.settled for a in audit(self.redis, self.settings)) and \
                    audit_runs(self.redis, self.settings).settled:
                return True
            time.sleep(0.1)
        return False

    def audit_ok(self) -> bool:
        """``mesh audit``'s verdict: streams and runs reconcile, nothing overdue."""
        return all(a.consistent for a in audit(self.redis, self.settings)) and \
            audit_runs(self.redis, self.settings).ok

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.procs)


class EagerMesh:
    """Runs a workflow's canvas in this process, synchronously (Celery's eager mode), for
    fast tests of a workflow's logic: chains, groups and chords work, retries happen at
    once (countdowns are not waited), and every step reports to the run ledger, so
    memoization and ``current_step()`` behave as in a worker. Needs a redis-server (the
    ledger, results): pass one, or it starts its own. No dispatcher: coalescing, dedupe
    and follow-up events are not run (use ``Harness`` for those)."""

    def __init__(self, modules: Sequence[str] = (), *, server: EmbeddedRedis | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.inner = Harness(modules, settings={**(settings or {}),
                                                "MESH_CELERY_TASK_ALWAYS_EAGER": "true"},
                             server=server)

    def __enter__(self) -> EagerMesh:
        from worker_mesh.chains.starter import CeleryStarter
        from worker_mesh.workers.app import create_app

        h = self.inner
        if h._own_server:
            h.server.start()
        h.settings = MeshSettings.load({**_base_env(h), **h.extra})
        h.keys = Keys(h.settings.redis.key_prefix)
        h.redis = make_client(h.settings.redis)
        h.registry = load_workflows(h.settings)
        h.ledger = RunLedger(h.redis, h.keys, h.settings.runs)
        self.app = create_app(h.settings)
        self.app.conf.task_eager_propagates = False  # a Retry is re-applied, not raised
        self.starter = CeleryStarter(self.app, h.registry, ledger=h.ledger)
        return self

    def __exit__(self, *exc: object) -> None:
        h = self.inner
        if h._own_server:
            h.server.stop()
        h._tmp.cleanup()

    def run(self, event: Event | Envelope) -> dict[str, Any]:
        """Run every workflow ``event`` starts (coalesced ones too, at once); returns
        each one's last result by workflow name. A step that fails for good raises."""
        from worker_mesh.events.routing import StartRequest

        h = self.inner
        env = event if isinstance(event, Envelope) else Envelope.wrap(event, producer="test")
        out: dict[str, Any] = {}
        for route in h.registry.route(env):
            wf = h.registry.get(route.workflow)
            run_id = wf.run_id(env)
            canvas, record = self.starter.prepare(StartRequest(wf.name, env, run_id))
            h.ledger.start_many([record])
            canvas.apply().get(propagate=True)  # a step that failed for good raises here
            out[wf.name] = h.run(run_id, wf.name).result
        return out


def _base_env(h: Harness) -> dict[str, str]:
    return {"MESH_REDIS_URL": h.server.url, "MESH_REDIS_KEY_PREFIX": "t" + uuid.uuid4().hex[:10],
            "MESH_CELERY_EXTRA_MODULES": json.dumps(h.modules),
            "MESH_ARTIFACTS_LOCAL_DIR": str(Path(h._tmp.name) / "artifacts"),
            "MESH_DISPATCHER_BLOCK_MS": "50"}


# -- pytest plugin ---------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # the kit works without pytest too
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="module")
    def mesh_redis() -> Iterator[EmbeddedRedis]:
        """A private redis-server for the test module."""
        with tempfile.TemporaryDirectory(prefix="mesh-redis-") as tmp:
            server = EmbeddedRedis(Path(tmp))
            server.start()
            yield server
            server.stop()

    @pytest.fixture(scope="module")
    def mesh(request: Any, mesh_redis: EmbeddedRedis) -> Iterator[Harness]:
        """A running mesh loading the test module's ``MESH_MODULES`` (a list of module
        names) with its ``MESH_SETTINGS`` (a dict of ``MESH_*`` values) and ``MESH_ENV``
        (other environment for the processes), if any."""
        modules = getattr(request.module, "MESH_MODULES", [])
        extra = getattr(request.module, "MESH_SETTINGS", {})
        env = getattr(request.module, "MESH_ENV", {})
        h = Harness(modules, settings=extra, server=mesh_redis, env=env)
        h.start()
        yield h
        h.stop()

    @pytest.fixture
    def mesh_eager(request: Any, mesh_redis: EmbeddedRedis) -> Iterator[EagerMesh]:
        """The test module's workflows run in this process (``EagerMesh``): fast tests of
        a workflow's logic, retries and chords included."""
        modules = getattr(request.module, "MESH_MODULES", [])
        with EagerMesh(modules, server=mesh_redis,
                       settings=getattr(request.module, "MESH_SETTINGS", {})) as m:
            yield m
