"""The simulator against the real mesh: a short trace replayed in real time through a
real dispatcher (the starter hands bulk runs to the real deferral), a real releaser
and a real GPU-queue worker (threads pool, micro-batching), compared with what
``gpu_pool.sim`` predicts for the same trace, settings and node curve.

The node's forward pass sleeps ``0.2 s + 0.05 s x batch`` (``sim_probe``), so the node
curve is known exactly and what is compared is the queueing, batching and deferral
model. Agreement asked for: items done and held/released counts equal; mean queueing
delay within 20%."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.gpu_pool import sim_probe
from tests.support.procs import start, wait_for
from worker_mesh.events.publisher import Publisher
from worker_mesh.gpu_pool.sim.model import Curve, NodeModel
from worker_mesh.gpu_pool.sim.simulate import predict_one_worker
from worker_mesh.gpu_pool.sim.trace import Record, Trace
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def plan(t0: float, open_at: float) -> list[tuple[float, bool]]:
    """(send time, urgent): urgent every 3 s and a burst of 24; two bulk bursts held
    until the window; urgent traffic goes on while the released backlog drains."""
    items = [(t0 + 3 * i, True) for i in range(int((open_at + 30 - t0) / 3))]
    items += [(t0 + 6, True)] * 24
    items += [(t0 + 2, False)] * 30 + [(t0 + 12, False)] * 30
    assert all(t < open_at - 10 for t, urgent in items if not urgent)
    return sorted(items)


def real_delays(r: redis.Redis, keys: Keys) -> tuple[int, list[float], list[float]]:
    urgent, bulk = [], []
    for raw in r.lrange(keys.ns("test", "sim_passes"), 0, -1):
        p = json.loads(raw)
        for entered, is_urgent in p["items"]:
            (urgent if is_urgent else bulk).append(p["start"] - entered)
    return len(urgent) + len(bulk), urgent, bulk


def test_simulator_agrees_with_a_real_dispatcher_and_worker(
        settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    now = time.time()
    open_at = (int(now) // 60 + 1) * 60
    if open_at - now < 50:
        open_at += 60
    o = datetime.fromtimestamp(open_at, UTC)
    c = datetime.fromtimestamp(open_at + 600, UTC)
    s = MeshSettings.load(settings.to_env() | {
        "MESH_CELERY_EXTRA_MODULES": '["tests.gpu_pool.sim_probe"]',
        "MESH_GPU_BATCH": '{"simecho": {"max_batch": 8, "max_wait_ms": 50}}',
        "MESH_GPU_OFFPEAK_WINDOWS": f'["{o:%H:%M}-{c:%H:%M} UTC"]',
        "MESH_GPU_RELEASE_INTERVAL_S": "1",
    })
    keys = Keys(s.redis.key_prefix)
    logs = tmp_path / "logs"
    procs = [start("dispatcher", ["dispatcher"], s, logs),
             start("gpu-worker", ["worker", "-Q", "gpu,gpu-batch", "--pool", "threads",
                                  "-c", "16"], s, logs),
             start("releaser", ["gpu", "releaser", "--interval", "1"], s, logs)]
    pub = Publisher(make_client(s.redis), s.streams, keys)
    try:
        # warm-up: one urgent item through the whole path, then forget it
        pub.publish(sim_probe.SimGpuItem(item_id="warm", urgent=True, sent_at=time.time()))
        wait_for(lambda: r.llen(keys.ns("test", "sim_passes")) > 0, timeout_s=120,
                 what="the worker ran the warm-up item")
        r.delete(keys.ns("test", "sim_passes"))
        t0 = time.time() + 1
        items = plan(t0, open_at)
        for i, (at, urgent) in enumerate(items):
            time.sleep(max(0.0, at - time.time()))
            pub.publish(sim_probe.SimGpuItem(item_id=f"i{i}", urgent=urgent, sent_at=time.time()))
        wait_for(lambda: real_delays(r, keys)[0] >= len(items), timeout_s=120,
                 what="every item ran")
        time.sleep(2)
        done, urgent, bulk = real_delays(r, keys)
        released = {k.decode(): int(v) for k, v in r.hgetall(keys.gpu_released_total()).items()}
    finally:
        for p in procs:
            p.stop()
    gpu = s.gpu
    trace = Trace(tuple(Record(at, "simecho", 1, urgent) for at, urgent in items), {})
    node = NodeModel(boot_s=0.0, curves={"simecho": Curve(sim_probe.FIXED_S, sim_probe.PER_ITEM_S)},
                     default_task_type="simecho")
    sim = predict_one_worker(trace, gpu, node)
    real = {"items_done": done, "held": sum(released.values()), "released": released,
            "urgent_wait_mean_s": sum(urgent) / len(urgent),
            "bulk_wait_mean_s": sum(bulk) / len(bulk),
            "all_wait_mean_s": (sum(urgent) + sum(bulk)) / done}
    sim_all = ((sim["urgent_wait_mean_s"] * len(urgent) + sim["bulk_wait_mean_s"] * len(bulk))
               / done)
    report = {"real": real, "sim": sim | {"all_wait_mean_s": sim_all}}
    print(json.dumps(report, indent=1))
    (tmp_path / "crosscheck.json").write_text(json.dumps(report))
    assert done == len(items) == sim["items_done"]
    assert released == {"window": 60} and sim["released"] == {"window": 60, "deadline": 0}
    assert sim["held"] == 60
    assert sim_all == pytest.approx(real["all_wait_mean_s"], rel=0.20), report
