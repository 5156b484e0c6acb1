"""Off-peak release: items/s released into ``gpu-batch`` when the window opens, and the
time to drain a backlog of held items (default 10,000), beside a baseline measured in
the same run: the same signatures sent with plain ``apply_async`` (what sending them
without deferral costs).

Time is injected: items are held "at noon" and released by one releaser tick "at the
window's start", so nothing waits for a real window.

Run: ``.venv/bin/python -m benchmarks.bench_release [--items 10000]``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from benchmarks._common import bench_settings, embedded_redis, emit
from worker_mesh.gpu_pool.deferral import CelerySender, Deferral
from worker_mesh.gpu_pool.queues import depths
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.workers.app import create_app

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OPEN = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--group", type=int, default=64, help="Release group (= max_batch).")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()

    with embedded_redis() as server:
        s = bench_settings(server, MESH_GPU_OFFPEAK_WINDOWS='["01:00-06:00 UTC"]',
                           MESH_GPU_RELEASE_GROUP_SIZE=str(a.group))
        keys = Keys(s.redis.key_prefix)
        r = make_client(s.redis)
        app = create_app(s)
        d = Deferral(r, keys, s.gpu, CelerySender(app))
        sigs = [dict(app.signature("mesh.gpu.embed_bulk", args=({"text": f"chunk {i}",
                                                                   "chunk_id": f"c{i}"},),
                                   task_id=f"bench-{i}")) for i in range(a.items)]

        # Baseline: plain sends of the same signatures, one producer, no deferral.
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for sig in sigs:
                app.signature(sig).apply_async(producer=producer)
        plain_s = time.perf_counter() - t0
        assert depths(r, keys).queued["gpu-batch"] == a.items
        r.delete(keys.celery_prefix() + "gpu-batch")

        t0 = time.perf_counter()
        for sig in sigs:
            assert d.submit(sig, now=NOON).held
        hold_s = time.perf_counter() - t0
        assert d.held_count() == a.items

        # The window opens: one releaser tick drains the backlog.
        t0 = time.perf_counter()
        released = d.release_due(OPEN)
        drain_s = time.perf_counter() - t0
        assert released == a.items and d.held_count() == 0
        assert depths(r, keys).queued["gpu-batch"] == a.items
        app.close()

    release_rate = a.items / drain_s
    plain_rate = a.items / plain_s
    emit("gpu_release", {
        "items": a.items, "group_size": a.group,
        "hold_items_per_s": round(a.items / hold_s, 1),
        "release_at_window_open_items_per_s": round(release_rate, 1),
        "time_to_drain_backlog_s": round(drain_s, 3),
        "baseline_plain_apply_async_items_per_s": round(plain_rate, 1),
        "ratio_release_vs_plain_send": round(release_rate / plain_rate, 3),
    }, write=not a.no_write)


if __name__ == "__main__":
    main()
