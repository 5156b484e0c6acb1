"""No code-executing deserializer on any queue.

Given a real worker consuming every Celery queue, when a pickle-serialized task whose
argument runs a shell command on unpickling is sent to each queue, then every message
is refused (``ContentDisallowed``) and dropped, the command never runs, and the worker
keeps serving JSON tasks. A pickled result planted in the result backend is refused by
the client too.
"""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import pytest
from kombu.exceptions import ContentDisallowed, DecodeError

from tests.support.procs import start, wait_for
from worker_mesh.gpu_pool.routing import ALL_QUEUES
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

pytestmark = pytest.mark.e2e


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickled_tasks_are_refused_on_every_queue(settings: MeshSettings, tmp_path: Path) -> None:
    s = MeshSettings.load({**settings.to_env(),
                           "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]'})
    app = create_app(s)
    keys = Keys(s.redis.key_prefix)
    r = make_client(s.redis)
    markers = {q: tmp_path / f"pwned-{q}" for q in ALL_QUEUES}
    w = start("worker", ["worker", "-Q", ",".join(ALL_QUEUES), "-c", "1", "--pool", "solo"], s,
              tmp_path / "logs")
    try:
        for q, marker in markers.items():
            app.send_task("mesh.probe.record", args=[{"run_id": "evil"}, Evil(marker)],
                          queue=q, serializer="pickle")
        # The worker takes each one off its queue and refuses it.
        wait_for(lambda: w.output().count("ContentDisallowed") >= len(ALL_QUEUES)
                 or w.output().count("Refusing to deserialize") >= len(ALL_QUEUES),
                 timeout_s=90, what="every pickled message refused")
        # Still alive, and JSON tasks still run.
        ok = app.signature("mesh.probe.record", args=({"run_id": "after"}, {})).apply_async()
        assert ok.get(timeout=60) == {"ok": True, "run_id": "after"}
        assert w.alive()
        for q in ALL_QUEUES:
            assert r.llen(keys.celery_prefix() + q) == 0, f"{q}: a refused message stayed queued"
        assert not any(m.exists() for m in markers.values()), "a pickle was executed"
        runs = r.lrange(keys.ns("probe", "runs"), 0, -1)
        assert len(runs) == 1 and b"after" in runs[0]
    finally:
        w.stop()

    # A pickled result planted in the backend is refused by the client, not executed.
    tid = str(uuid.uuid4())
    marker = tmp_path / "pwned-result"
    backend = app.backend
    meta = {"status": "SUCCESS", "result": Evil(marker), "traceback": None, "children": [],
            "task_id": tid, "date_done": None}
    r.set(backend.get_key_for_task(tid), pickle.dumps(meta))
    with pytest.raises((ContentDisallowed, DecodeError)):  # read as JSON only
        app.AsyncResult(tid).get(timeout=10)
    assert not marker.exists()
