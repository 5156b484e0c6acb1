"""The autoscale controller with the REAL kubernetes client against a local API stub:
scaling from queue depth and reserved work, busy pods protected, 409 and 403 handled
with clear messages and no crash loop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from tests.gpu_pool.kube_stub import KubeStub
from worker_mesh.gpu_pool.controller import (
    DELETION_COST,
    Controller,
    KubeForbidden,
    ScaleConflict,
    api_client_from_env,
)
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # window 01:00-06:00 UTC: closed


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub(replicas=1).start()
    yield s
    s.stop()


@pytest.fixture
def ctl(stub: KubeStub, settings: MeshSettings, r: redis.Redis) -> Controller:
    s = MeshSettings.load(settings.to_env() | {
        "MESH_GPU_TARGET_PER_WORKER": "10", "MESH_GPU_MAX_WORKERS": "4",
        "MESH_GPU_COOLDOWN_S": "60", "MESH_GPU_IDLE_TO_ZERO_S": "120",
        "MESH_GPU_OFFPEAK_WINDOWS": '["01:00-06:00 UTC"]', "MESH_GPU_AUTOSCALE_INTERVAL_S": "5"})
    return Controller(api_client_from_env(stub.url), r, Keys(s.redis.key_prefix), s.gpu)


def enqueue(r: redis.Redis, keys: Keys, queue: str, n: int) -> None:
    r.lpush(keys.celery_prefix() + queue, *[json.dumps({"body": i}) for i in range(n)])


def reserve(r: redis.Redis, keys: Keys, queue: str, n: int) -> None:
    """What kombu's Redis transport writes for prefetched/in-progress messages."""
    r.hset(keys.celery_prefix() + "unacked",
           mapping={f"tag{i}": json.dumps([{"body": i}, "", queue]) for i in range(n)})


def set_busy(r: redis.Redis, keys: Keys, host: str, n: int) -> None:
    r.hset(keys.gpu_busy(), host, n)
    r.hset(keys.gpu_busy_seen(), host, time.time())


def test_scales_up_from_queue_depth_plus_reserved(ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    enqueue(r, ctl.keys, "gpu-batch", 12)
    reserve(r, ctl.keys, "gpu", 15)  # in flight: the lists alone would say 12
    res = ctl.tick(NOON)
    assert res.applied and (res.current, res.desired) == (1, 3)
    assert stub.replicas == 3
    patch = next(b for m, p, b in stub.requests if m == "PATCH" and p.endswith("/scale"))
    assert patch["metadata"]["resourceVersion"] == "1"  # optimistic concurrency


def test_never_removes_a_busy_worker(ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    stub.replicas = 3
    stub.pods = {"gpu-a": {}, "gpu-b": {}, "gpu-c": {DELETION_COST: "10000"}}
    set_busy(r, ctl.keys, "gpu-b", 2)
    set_busy(r, ctl.keys, "gpu-zzz", 0)  # another host, idle
    res = ctl.tick(NOON)
    # No queued work: the policy wants 0, but gpu-b has a task in progress
    assert res.desired == 1 and stub.replicas == 1 and res.busy_pods == ["gpu-b"]
    assert stub.pods["gpu-b"][DELETION_COST] == "10000"  # removed last
    assert stub.pods["gpu-c"][DELETION_COST] == "0"  # no longer busy
    assert DELETION_COST not in stub.pods["gpu-a"]


def test_scale_down_waits_for_cooldown(ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    enqueue(r, ctl.keys, "gpu", 35)
    assert ctl.tick(NOON).desired == 4
    r.delete(ctl.keys.celery_prefix() + "gpu")
    enqueue(r, ctl.keys, "gpu", 5)
    res = ctl.tick(NOON + timedelta(seconds=30))
    assert res.desired == 4 and not res.applied and "cooldown" in res.reason
    res = ctl.tick(NOON + timedelta(seconds=61))
    assert res.desired == 1 and stub.replicas == 1


def test_state_survives_a_controller_restart(ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    enqueue(r, ctl.keys, "gpu", 35)
    ctl.tick(NOON)
    r.delete(ctl.keys.celery_prefix() + "gpu")
    again = Controller(api_client_from_env(stub.url), r, ctl.keys, ctl.gpu)
    res = again.tick(NOON + timedelta(seconds=10))
    assert not res.applied and stub.replicas == 4  # cooldown / idle timer remembered


def test_409_conflict_is_a_clear_transient_error_and_the_loop_recovers(
        ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    enqueue(r, ctl.keys, "gpu", 25)
    stub.fail[("PATCH", "scale")] = [409]
    with pytest.raises(ScaleConflict, match="changed since read"):
        ctl.tick(NOON)
    assert stub.replicas == 1
    stub.fail[("PATCH", "scale")] = [409]
    sleeps: list[float] = []
    results = ctl.run(clock=lambda: NOON, sleep=sleeps.append, max_ticks=2)
    assert results[0].error and "conflict" in results[0].error
    assert results[1].applied and stub.replicas == 3
    assert sleeps == [1.0]  # re-read soon after a conflict


def test_403_forbidden_names_the_missing_permission_and_backs_off(
        ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    stub.fail[("GET", "scale")] = [403, 403, 403]
    with pytest.raises(KubeForbidden) as exc:
        ctl.tick(NOON)
    msg = str(exc.value)
    assert "get" in msg and "deployments/scale" in msg and "RBAC" in msg and "'mesh'" in msg
    sleeps: list[float] = []
    results = ctl.run(clock=lambda: NOON, sleep=sleeps.append, max_ticks=3)
    assert [bool(x.error) for x in results] == [True, True, False]  # recovered, no crash
    assert sleeps == [5.0, 10.0]  # exponential backoff, no hot loop


def test_forbidden_pods_means_no_scale_down(ctl: Controller, stub: KubeStub, r) -> None:  # type: ignore[no-untyped-def]
    stub.replicas = 2
    stub.fail[("GET", "pods")] = [403]
    res = ctl.tick(NOON)
    assert res.desired == 2 and stub.replicas == 2  # cannot see busy pods: keep them
