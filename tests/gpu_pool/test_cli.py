"""`mesh gpu status|release|cost|autoscale` against a real redis-server (and the local
Kubernetes API stub for autoscale)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis
from click.testing import CliRunner

from tests.gpu_pool.kube_stub import KubeStub
from worker_mesh.gpu_pool import cost
from worker_mesh.gpu_pool.deferral import CelerySender, Deferral
from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.cli import cli

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def env(settings: MeshSettings) -> dict[str, str]:
    return settings.to_env() | {"MESH_GPU_TARGET_PER_WORKER": "10"}


def hold(settings: MeshSettings, r: redis.Redis, n: int) -> None:
    """Hold ``n`` bulk items (injected time: noon, outside a 01:00-02:00 window)."""
    app = create_app(settings)
    d = Deferral(r, Keys(settings.redis.key_prefix), settings.gpu, CelerySender(app),
                 windows=Windows.parse(["01:00-02:00 UTC"]))
    for i in range(n):
        assert d.submit(dict(app.signature("mesh.gpu.embed_bulk", args=(f"t{i}",))), now=NOON).held


def test_status_release_and_status_again(settings: MeshSettings, r: redis.Redis) -> None:
    runner = CliRunner()
    hold(settings, r, 5)
    keys = Keys(settings.redis.key_prefix)
    r.lpush(keys.celery_prefix() + "gpu", *["m"] * 12)
    r.hset(keys.celery_prefix() + "unacked", "t1", json.dumps([{}, "", "gpu"]))
    out = runner.invoke(cli, ["gpu", "status", "--json"], env=env(settings))
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["held"]["items"] == 5
    assert data["queues"]["gpu"] == {"queued": 12, "reserved": 1}
    assert data["pool"]["desired"] == 2  # 13 outstanding / 10 per worker
    assert data["window"]["next_open"] is not None
    text = runner.invoke(cli, ["gpu", "status"], env=env(settings))
    assert "held items: 5" in text.output and "desired 2" in text.output

    out = runner.invoke(cli, ["gpu", "release", "--json"], env=env(settings))
    assert out.exit_code == 0 and json.loads(out.output) == {"released": 5}
    data = json.loads(runner.invoke(cli, ["gpu", "status", "--json"], env=env(settings)).output)
    assert data["held"]["items"] == 0 and data["queues"]["gpu-batch"]["queued"] == 5


def test_cost_report_with_and_without_deferral(settings: MeshSettings, r: redis.Redis) -> None:
    keys = Keys(settings.redis.key_prefix)
    cost.record(r, keys, "embed", 100.0, offpeak=False, deferred=False)  # urgent, at peak
    cost.record(r, keys, "embed", 300.0, offpeak=True, deferred=True)  # held, ran off-peak
    cost.record(r, keys, "churn", 50.0, offpeak=True, deferred=False)  # submitted in window
    out = CliRunner().invoke(cli, ["gpu", "cost", "--peak-price", "0.01", "--offpeak-price",
                                   "0.004", "--json"], env=env(settings))
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    # with: 100*.01 + 300*.004 + 50*.004 = 2.4 ; without: 100*.01 + 300*.01 + 50*.004 = 4.2
    assert data["with_deferral"] == 2.4 and data["without_deferral"] == 4.2
    assert data["saved"] == 1.8 and data["gpu_seconds"] == 450.0
    by = {t["task_type"]: t for t in data["by_task_type"]}
    assert by["embed"]["deferred_s"] == 300.0 and by["churn"]["peak_s"] == 0.0
    text = CliRunner().invoke(cli, ["gpu", "cost", "--peak-price", "1", "--offpeak-price", "1"],
                              env=env(settings))
    assert "saved: 0.0000" in text.output
    # it says what its figure is, and where node-hours are
    assert "not node-hours" in text.output and "mesh gpu simulate" in text.output
    assert "mesh gpu simulate" in data["what"]


def test_autoscale_once_and_forbidden_exit_code(settings: MeshSettings, r: redis.Redis) -> None:
    stub = KubeStub(replicas=0).start()
    try:
        keys = Keys(settings.redis.key_prefix)
        r.lpush(keys.celery_prefix() + "gpu-batch", *["m"] * 25)
        args = ["gpu", "autoscale", "--once", "--json", "--api-host", stub.url]
        out = CliRunner().invoke(cli, args, env=env(settings))
        assert out.exit_code == 0, out.output
        assert json.loads(out.output.strip().splitlines()[-1])["desired"] == 3
        assert stub.replicas == 3
        stub.fail[("GET", "scale")] = [403]
        plain = ["gpu", "autoscale", "--once", "--api-host", stub.url]
        out = CliRunner().invoke(cli, plain, env=env(settings))
        assert out.exit_code == 1 and "forbidden" in out.output and "RBAC" in out.output
    finally:
        stub.stop()


def test_releaser_process_releases_when_open_and_stops_on_sigterm(
        settings: MeshSettings, r: redis.Redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal

    from tests.support.procs import start, wait_for

    hold(settings, r, 7)
    keys = Keys(settings.redis.key_prefix)
    open_now = MeshSettings.load(settings.to_env() | {
        "MESH_GPU_OFFPEAK_WINDOWS": '["00:00-24:00 UTC"]'})
    proc = start("releaser", ["gpu", "releaser", "--interval", "0.2"], open_now, tmp_path)
    try:
        wait_for(lambda: r.llen(keys.celery_prefix() + "gpu-batch") == 7, timeout_s=60,
                 what="held items released by the releaser process")
        assert r.zcard(keys.gpu_held_order()) == 0
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output()[-2000:]
    assert "released 7" in proc.output()
