"""The ConfigMap holds the settings the code reads, loaded through MeshSettings.load (so
an unknown key fails), and the manifests agree with those settings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.cli import _k8s
from worker_mesh.workers.cli._k8s_policy import secret_setting_names

from .conftest import find

OVERLAYS = ["dev", "prod", "prod-autoscaler"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_loads_through_the_settings_class(overlay: str, overlay_objs: Callable) -> None:
    data = _k8s.settings_configmap(overlay_objs(overlay))
    assert data and all(k.startswith("MESH_") for k in data)
    s = MeshSettings.load(data)
    assert s.redis.url is None, "the Redis URL (it carries the password) is never in the ConfigMap"
    assert not set(data) & secret_setting_names()
    assert s.celery.prefetch_multiplier == 1


def test_an_unknown_key_in_the_configmap_fails_to_load(overlay_objs: Callable) -> None:
    data = _k8s.settings_configmap(overlay_objs("prod"))
    data["MESH_CELERY_TASK_TIMELIMIT_S"] = "60"
    with pytest.raises(ConfigError, match="MESH_CELERY_TASK_TIMELIMIT_S"):
        MeshSettings.load(data)


def test_prod_settings_differ_from_dev_where_they_should(overlay_objs: Callable) -> None:
    prod = MeshSettings.load(_k8s.settings_configmap(overlay_objs("prod")))
    dev = MeshSettings.load(_k8s.settings_configmap(overlay_objs("dev")))
    assert (prod.monitoring.environment, dev.monitoring.environment) == ("prod", "dev")
    assert prod.artifacts.backend == "s3" and prod.artifacts.s3_bucket
    assert dev.artifacts.local_dir.startswith("/tmp/"), "the root filesystem is read-only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_grace_period_outlasts_the_longest_task(overlay: str, overlay_objs: Callable) -> None:
    objs = overlay_objs(overlay)
    from_configmap = MeshSettings.load(_k8s.settings_configmap(objs)).celery.task_time_limit_s
    default = MeshSettings.load({}).celery.task_time_limit_s
    for name in ("mesh-worker-cpu", "mesh-worker-io", "mesh-worker-gpu"):
        grace = find(objs, "Deployment", name)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > from_configmap and grace > default, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_mesh_container_reads_settings_and_secrets_by_reference(overlay: str,
                                                                      overlay_objs: Callable) -> None:
    objs = overlay_objs(overlay)
    cm_name = find(objs, "ConfigMap", "mesh-settings")["metadata"]["name"]
    for d in (o for o in objs if o["kind"] == "Deployment"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": cm_name}} in c["envFrom"], d["metadata"]["name"]
        assert {"secretRef": {"name": "mesh-secrets"}} in c["envFrom"], d["metadata"]["name"]


def test_gpu_scaled_object_is_the_gpu_policy_of_the_settings(overlay_objs: Callable) -> None:
    objs = overlay_objs("prod")
    s = MeshSettings.load(_k8s.settings_configmap(objs))
    so = find(objs, "ScaledObject", "mesh-worker-gpu")["spec"]
    assert so["scaleTargetRef"]["name"] == s.gpu.deployment
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (0, s.gpu.max_workers)
    assert so["cooldownPeriod"] == s.gpu.idle_to_zero_s
    redis = [t for t in so["triggers"] if t["type"] == "redis"]
    assert {t["metadata"]["listName"] for t in redis} == {"mesh:celery:gpu", "mesh:celery:gpu-batch"}
    assert {t["metadata"]["listLength"] for t in redis} == {str(s.gpu.target_per_worker)}
    assert all(t["authenticationRef"] == {"name": "mesh-redis"} for t in redis)
    cron = [t["metadata"] for t in so["triggers"] if t["type"] == "cron"]
    assert cron == [{"timezone": "UTC", "start": "50 0 * * *", "end": "0 6 * * *",
                     "desiredReplicas": str(s.gpu.prewarm_workers)}]


@pytest.mark.parametrize(("window", "prewarm_s", "start", "end", "zone"), [
    ("01:00-06:00 UTC", 600, "50 0 * * *", "0 6 * * *", "UTC"),
    ("00:05-06:30 Europe/Berlin", 600, "55 23 * * *", "30 6 * * *", "Europe/Berlin"),
    ("22:00-04:00 America/New_York", 0, "0 22 * * *", "0 4 * * *", "America/New_York"),
])
def test_cron_trigger_prewarms_before_the_window(window: str, prewarm_s: int, start: str, end: str,
                                                 zone: str) -> None:
    meta = _k8s.cron_trigger(window, 2, prewarm_s)["metadata"]
    assert meta == {"timezone": zone, "start": start, "end": end, "desiredReplicas": "2"}


def test_a_malformed_window_is_refused() -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        _k8s.parse_window("1am-6am")


def test_generator_follows_the_settings() -> None:
    s = MeshSettings.load({"MESH_REDIS_KEY_PREFIX": "shop", "MESH_GPU_MAX_WORKERS": "9",
                           "MESH_GPU_OFFPEAK_WINDOWS": '["01:00-05:00 UTC", "13:00-14:00 Asia/Tokyo"]'})
    so = _k8s.scaled_object(_k8s.gpu_scaling(s), s)
    assert so["spec"]["maxReplicaCount"] == 9
    lists = [t["metadata"]["listName"] for t in so["spec"]["triggers"] if t["type"] == "redis"]
    assert lists == ["shop:celery:gpu", "shop:celery:gpu-batch"]
    zones = [t["metadata"]["timezone"] for t in so["spec"]["triggers"] if t["type"] == "cron"]
    assert zones == ["UTC", "Asia/Tokyo"]


def test_no_prewarm_workers_means_no_cron_trigger() -> None:
    s = MeshSettings.load({"MESH_GPU_PREWARM_WORKERS": "0"})
    so = _k8s.scaled_object(_k8s.gpu_scaling(s), s)
    assert [t["type"] for t in so["spec"]["triggers"]] == ["redis", "redis"]
