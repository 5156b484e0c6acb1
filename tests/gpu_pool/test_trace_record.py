"""`mesh gpu trace record` against a real redis-server and real Celery producers: urgent
sends are recorded from task-sent events, held bulk work at its submission with its
deadline, releases are not counted twice, direct bulk sends inside a window are."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import redis

from tests.support.procs import wait_for
from worker_mesh.gpu_pool.deferral import CelerySender, Deferral
from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.sim import recorder
from worker_mesh.gpu_pool.sim.trace import Record
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app


def test_records_urgent_held_and_direct_bulk_once(settings: MeshSettings, r: redis.Redis) -> None:
    app = create_app(settings)
    keys = Keys(settings.redis.key_prefix)
    lines: list[Record] = []
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: recorder.record(
        app, r, keys, lines.extend, stop=stop, poll_s=0.2, ready=ready), daemon=True)
    t.start()
    try:
        # Given a recorder that sees the mesh's events (a ping event proves it)
        def ping() -> bool:
            with app.events.default_dispatcher() as disp:
                disp.send("worker-heartbeat")
            return ready.is_set()

        wait_for(ping, timeout_s=20, what="recorder consuming events")
        now = datetime.now(UTC)
        closed = Deferral(r, keys, settings.gpu, CelerySender(app),
                          windows=Windows.parse([f"{(now + timedelta(hours=3)):%H}:00-"
                                                 f"{(now + timedelta(hours=4)):%H}:00 UTC"]))
        is_open = Deferral(r, keys, settings.gpu, CelerySender(app),
                           windows=Windows.parse(["00:00-24:00 UTC"]))
        # When 7 urgent items are sent, 5 bulk items are held (2 with a deadline),
        for i in range(7):
            app.signature("mesh.gpu.embed", args=(f"u{i}",)).apply_async()
        deadline = now + timedelta(hours=12)
        for i in range(5):
            assert closed.submit(dict(app.signature("mesh.gpu.embed_bulk", args=(f"b{i}",))),
                                 now=now, deadline=deadline if i < 2 else None).held
        time.sleep(0.6)  # the poller sees them held
        # then released (5 sends on gpu-batch) and 3 bulk items are sent in an open window
        assert closed.release_all() == 5
        for i in range(3):
            assert not is_open.submit(dict(app.signature("mesh.gpu.embed_bulk", args=(f"d{i}",))),
                                      now=now).held
        time.sleep(3.0)  # past the recorder's grace period
    finally:
        stop.set()
        t.join(20)
        app.close()
    # Then the trace has each submission once: 7 urgent, 5 held (at submission, with
    # their deadlines), 3 direct bulk; the 5 releases are not counted again
    urgent = sum(x.items for x in lines if x.urgent)
    held = [x for x in lines if not x.urgent and x.span_s == 0]
    direct = sum(x.items for x in lines if not x.urgent and x.span_s > 0)
    assert urgent == 7
    assert sum(x.items for x in held) == 5 and direct == 3
    assert sorted(x.deadline or 0 for x in held) == [0, 0, 0, deadline.timestamp(),
                                                      deadline.timestamp()]
    assert all(abs(x.t - now.timestamp()) < 1 for x in held)
    assert {x.task_type for x in lines} == {"embed"}
