"""Policy over the rendered YAML of every overlay, and each check shown to catch the
mistake it exists for (a manifest broken on purpose)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from worker_mesh.workers.cli import _k8s_policy as policy
from worker_mesh.workers.cli._k8s_policy import CHECKS, GPU_CHECKS

from .conftest import find

OVERLAYS = ["dev", "prod", "prod-autoscaler"]
GPU_POOL = ["prod", "prod-autoscaler"]


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_complies(overlay: str, check: str, overlay_objs: Callable) -> None:
    assert CHECKS[check](overlay_objs(overlay)) == []


@pytest.mark.parametrize("overlay", GPU_POOL)
def test_gpu_workers_get_a_gpu_on_gpu_nodes(overlay: str, overlay_objs: Callable) -> None:
    objs = overlay_objs(overlay)
    assert GPU_CHECKS["gpu"](objs) == []
    spec = find(objs, "Deployment", "mesh-worker-gpu")["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["containers"][0]["image"].endswith("worker-mesh-cuda:0.2.0")


def test_dev_runs_the_gpu_queues_on_cpu(overlay_objs: Callable) -> None:
    spec = find(overlay_objs("dev"), "Deployment", "mesh-worker-gpu")["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert not spec.get("tolerations") and not spec.get("nodeSelector")
    assert {"name": "MESH_GPU_DEVICE", "value": "cpu"} in c["env"]


def _container(objs: list, name: str) -> dict:
    return find(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _pod(objs: list, name: str) -> dict:
    return find(objs, "Deployment", name)["spec"]["template"]["spec"]


def _add_role(objs: list, subject: str, resources: list, verbs: list, names: list | None) -> None:
    rule = {"apiGroups": ["apps"], "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": "extra"}, "rules": [rule]})
    objs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "extra"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extra"},
                 "subjects": [{"kind": "ServiceAccount", "name": subject}]})


def _configmap(objs: list) -> dict:
    return find(objs, "ConfigMap", "mesh-settings")["data"]


BREAKAGES: dict[str, tuple[str, str, Callable[[list], None]]] = {
    "no-memory-limit": ("resources", "prod",
                        lambda o: _container(o, "mesh-flower")["resources"]["limits"].pop("memory")),
    "runs-as-root": ("security", "prod",
                     lambda o: _container(o, "mesh-beat")["securityContext"].update(runAsUser=0)),
    "writable-root": ("security", "prod", lambda o: _container(o, "mesh-dispatcher")[
        "securityContext"].update(readOnlyRootFilesystem=False)),
    "escalation": ("security", "dev", lambda o: _container(o, "mesh-worker-io")[
        "securityContext"].pop("allowPrivilegeEscalation")),
    "caps-kept": ("security", "prod", lambda o: _container(o, "mesh-exporter")[
        "securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
    "redis-as-root": ("security", "dev", lambda o: find(o, "StatefulSet", "mesh-redis")[
        "spec"]["template"]["spec"]["securityContext"].pop("runAsUser")),
    "no-liveness": ("probes", "prod", lambda o: _container(o, "mesh-beat").pop("livenessProbe")),
    "worker-ready-without-broker": ("probes", "prod", lambda o: _container(o, "mesh-worker-cpu")[
        "readinessProbe"].update(exec={"command": ["true"]})),
    "latest-image": ("images", "prod", lambda o: _container(o, "mesh-beat").update(image="mesh:latest")),
    "secret-in-configmap": ("secrets", "prod",
                            lambda o: _configmap(o).update(MESH_LLM_API_KEY="sk-123")),
    "password-url-in-configmap": ("secrets", "dev", lambda o: _configmap(o).update(
        MESH_ARTIFACTS_S3_ENDPOINT_URL="http://user:hunter2@minio:9000")),
    "secret-as-literal-env": ("secrets", "prod", lambda o: _container(o, "mesh-dispatcher")["env"].append(
        {"name": "MESH_REDIS_URL", "value": "redis://redis:6379/0"})),
    "unknown-setting": ("settings", "prod", lambda o: _configmap(o).update(MESH_CELERY_TIME_LIMIT="1")),
    "two-beats": ("beat", "prod", lambda o: find(o, "Deployment", "mesh-beat")["spec"].update(replicas=2)),
    "rolling-beat": ("beat", "prod", lambda o: find(o, "Deployment", "mesh-beat")["spec"].update(
        strategy={"type": "RollingUpdate"})),
    "short-grace": ("workers", "prod", lambda o: _pod(o, "mesh-worker-gpu").update(
        terminationGracePeriodSeconds=600)),
    "longer-task-limit": ("workers", "prod", lambda o: _configmap(o).update(
        MESH_CELERY_TASK_TIME_LIMIT_S="3000", MESH_CELERY_VISIBILITY_TIMEOUT_S="7200")),
    "oom-before-recycle": ("workers", "prod", lambda o: _configmap(o).update(
        MESH_CELERY_WORKER_MAX_MEMORY_PER_CHILD_BYTES=str(2 * 1024**3))),
    "no-prestop": ("workers", "prod", lambda o: _container(o, "mesh-worker-cpu").pop("lifecycle")),
    "no-gpu-limit": ("gpu", "prod", lambda o: _container(o, "mesh-worker-gpu")["resources"]["limits"].pop(
        "nvidia.com/gpu")),
    "no-toleration": ("gpu", "prod", lambda o: _pod(o, "mesh-worker-gpu").pop("tolerations")),
    "gpu-prefetch": ("gpu", "prod", lambda o: _container(o, "mesh-worker-gpu").update(
        env=[e for e in _container(o, "mesh-worker-gpu")["env"]
             if e["name"] != "MESH_CELERY_PREFETCH_MULTIPLIER"]) or _configmap(o).update(
        MESH_CELERY_PREFETCH_MULTIPLIER="4")),
    "gpu-too-few-threads": ("gpu", "prod", lambda o: _configmap(o).update(MESH_GPU_MAX_BATCH="256")),
    "no-default-deny": ("network", "prod", lambda o: o.remove(
        find(o, "NetworkPolicy", "mesh-default-deny-ingress"))),
    "flower-open": ("network", "prod", lambda o: find(o, "NetworkPolicy", "mesh-flower-from-monitoring")[
        "spec"]["ingress"][0]["from"].append({"podSelector": {}})),
    "redis-open": ("network", "dev", lambda o: find(o, "NetworkPolicy", "mesh-redis-clients-only")[
        "spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})),
    "scale-for-runtime-sa": ("rbac", "prod", lambda o: _add_role(
        o, "mesh", ["deployments/scale"], ["patch"], ["mesh-worker-gpu"])),
    "scale-any-deployment": ("rbac", "prod-autoscaler", lambda o: find(o, "Role", "mesh-gpu-autoscaler")[
        "rules"][0].pop("resourceNames")),
    "wildcard": ("rbac", "prod-autoscaler", lambda o: find(o, "Role", "mesh-gpu-autoscaler")[
        "rules"][2].update(verbs=["*"])),
    "token-mounted": ("rbac", "prod", lambda o: _pod(o, "mesh-beat").pop("automountServiceAccountToken")),
    "no-pdb": ("pdbs", "prod", lambda o: o.remove(find(o, "PodDisruptionBudget", "mesh-worker-io"))),
    "blocking-pdb": ("pdbs", "prod", lambda o: find(o, "PodDisruptionBudget", "mesh-beat")["spec"].update(
        minAvailable=1)),
    "hpa": ("autoscaling", "prod", lambda o: o.append({"kind": "HorizontalPodAutoscaler",
                                                        "metadata": {"name": "x"}})),
    "other-prefix": ("autoscaling", "prod", lambda o: _configmap(o).update(MESH_REDIS_KEY_PREFIX="shop")),
    "new-window": ("autoscaling", "prod", lambda o: _configmap(o).update(
        MESH_GPU_OFFPEAK_WINDOWS='["01:00-06:00 UTC", "12:00-13:00 Europe/Berlin"]')),
    "gpu-policy-drift": ("autoscaling", "prod", lambda o: _configmap(o).update(MESH_GPU_MAX_WORKERS="8")),
    "exporter-port": ("ports", "prod", lambda o: _configmap(o).update(MESH_MONITORING_EXPORTER_PORT="9000")),
    "metrics-on-loopback": ("exposure", "prod", lambda o: _configmap(o).pop(
        "MESH_MONITORING_METRICS_ADDRESS")),
    "metrics-from-any-monitoring-pod": ("exposure", "prod", lambda o: find(
        o, "NetworkPolicy", "mesh-metrics-from-monitoring")["spec"]["ingress"][0]["from"][0].pop(
        "podSelector")),
    "flower-optional-auth": ("exposure", "dev", lambda o: _container(o, "mesh-flower")["env"][0][
        "valueFrom"]["secretKeyRef"].update(optional=True)),
    "flower-password-in-args": ("exposure", "prod", lambda o: _container(o, "mesh-flower")[
        "args"].append("--basic_auth=ops:hunter2")),
    "flower-no-auth": ("exposure", "prod", lambda o: _container(o, "mesh-flower")["args"].append(
        "--no-auth")),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_check_catches(case: str, overlay_objs: Callable) -> None:
    check, overlay, breaker = BREAKAGES[case]
    objs = overlay_objs(overlay)
    fn = {**CHECKS, **GPU_CHECKS}[check]
    assert fn(objs) == []
    breaker(objs)
    assert fn(objs), f"{check} did not catch {case}"


def test_every_check_has_a_breakage() -> None:
    assert {c for c, _, _ in BREAKAGES.values()} == set(CHECKS) | set(GPU_CHECKS)


def test_secret_settings_are_the_secret_fields_of_the_settings() -> None:
    assert policy.secret_setting_names() == {
        "MESH_REDIS_URL", "MESH_MONITORING_SENTRY_DSN", "MESH_LLM_API_KEY",
        "MESH_MONITORING_FLOWER_BASIC_AUTH", "MESH_TRACING_OTLP_HEADERS",
        "MESH_ARTIFACTS_S3_ACCESS_KEY_ID", "MESH_ARTIFACTS_S3_SECRET_ACCESS_KEY"}


@pytest.mark.parametrize(("quantity", "expected"), [
    ("3Gi", 3 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), ("1500M", 15 * 10**8), ("1024", 1024)])
def test_memory_quantities(quantity: str, expected: int) -> None:
    assert policy.memory_bytes(quantity) == expected
