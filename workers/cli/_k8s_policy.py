"""Policy checks over rendered manifests: the rules a reviewer would check by hand.

Each check takes the rendered objects of one overlay and returns the violations as
readable strings (empty: compliant). ``mesh k8s check`` runs them all; the tests run them
per overlay and also feed each one a manifest broken on purpose, so a check that can no
longer fail is noticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.cli._k8s import Obj
from worker_mesh.workers.cli._k8s_exposure import check_exposure
from worker_mesh.workers.cli._k8s_objects import (
    args_of,
    containers,
    is_worker,
    memory_bytes,
    mesh_settings,
    name,
    pod_spec,
    secret_setting_names,
    worker_queues,
    workloads,
)

__all__ = ["CHECKS", "GPU_CHECKS", "memory_bytes", "run_checks", "secret_setting_names"]

AUTOSCALER_SA = "mesh-gpu-autoscaler"
GPU_DEPLOYMENT = "mesh-worker-gpu"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
PASSWORD_URL = re.compile(r"://[^/@\s]*:[^@/\s]+@")
PARENT_OVERHEAD_BYTES = 512 * 2**20
"""Room for a prefork worker's parent process next to its children."""


# ------------------------------------------------------------------ checks

def check_resources(objs: list[Obj]) -> list[str]:
    out = []
    for where, c in (x for o in objs for x in containers(o)):
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    out.append(f"{where}: no {kind}.{r}")
    return out


def check_security(objs: list[Obj]) -> list[str]:
    out = []
    for o in workloads(objs):
        spec = pod_spec(o) or {}
        psc = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                out.append(f"{name(o)}: {flag}")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            out.append(f"{name(o)}: hostPath volume")
        if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name(o)}: no RuntimeDefault seccomp profile")
        for where, c in containers(o):
            sc = c.get("securityContext", {})
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True or uid in (None, 0):
                out.append(f"{where}: may run as root")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: root filesystem writable")
            if sc.get("privileged"):
                out.append(f"{where}: privileged")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get(
                    "capabilities", {}).get("add"):
                out.append(f"{where}: capabilities not all dropped")
    return out


def check_probes(objs: list[Obj]) -> list[str]:
    out = []
    for o in workloads(objs):
        if o["kind"] in ("Job", "CronJob"):
            continue
        for where, c in containers(o):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    out.append(f"{where}: no {probe}")
        if is_worker(o):
            ready = (pod_spec(o) or {})["containers"][0].get("readinessProbe", {})
            cmd = ready.get("exec", {}).get("command", [])
            if cmd[:2] != ["mesh", "health"]:
                out.append(f"{name(o)}: readiness does not check the broker (mesh health)")
    return out


def check_images(objs: list[Obj]) -> list[str]:
    out = []
    for where, c in (x for o in objs for x in containers(o)):
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            out.append(f"{where}: image {image!r} not pinned to a tag or digest")
    return out


def check_secrets(objs: list[Obj]) -> list[str]:
    """No secret setting (or anything shaped like a credential) in a ConfigMap, and the
    secret settings reach containers only through Secret references."""
    secret_names = secret_setting_names()
    out = []
    for o in objs:
        if o["kind"] != "ConfigMap":
            continue
        for key, value in (o.get("data") or {}).items():
            if key.upper() in secret_names or re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|DSN", key.upper()):
                out.append(f"{name(o)}: secret key {key}")
            if PASSWORD_URL.search(str(value)):
                out.append(f"{name(o)}: {key} carries a URL with credentials")
    for where, c in (x for o in objs for x in containers(o)):
        for env in c.get("env", []):
            if env["name"].upper() in secret_names and "secretKeyRef" not in env.get("valueFrom", {}):
                out.append(f"{where}: {env['name']} not from a Secret")
            if PASSWORD_URL.search(str(env.get("value", ""))):
                out.append(f"{where}: {env['name']} carries a URL with credentials")
    return out


def check_settings(objs: list[Obj]) -> list[str]:
    """The ConfigMap holds only settings the code reads: MeshSettings.load rejects unknown keys."""
    try:
        s = mesh_settings(objs)
    except ConfigError as exc:
        return [f"mesh-settings: {exc}"]
    return [f"mesh-settings: {k} is a secret" for k, v in s.to_env().items()
            if isinstance(_value(s, k), SecretStr)]


def _value(s: MeshSettings, env: str) -> Any:
    group, _, field = env[len("MESH_"):].lower().partition("_")
    return getattr(getattr(s, group), field)


def check_beat(objs: list[Obj]) -> list[str]:
    beats = [o for o in objs if o["kind"] == "Deployment" and args_of(o)[:1] == ["beat"]]
    if len(beats) != 1:
        return [f"expected exactly one beat Deployment, found {len(beats)}"]
    b = beats[0]
    out = []
    if b["spec"].get("replicas") != 1:
        out.append(f"{name(b)}: replicas {b['spec'].get('replicas')} (must be 1)")
    if b["spec"].get("strategy", {}).get("type") != "Recreate":
        out.append(f"{name(b)}: strategy is not Recreate")
    if any(o["kind"] == "ScaledObject" and o["spec"]["scaleTargetRef"]["name"] == b["metadata"]["name"]
           for o in objs):
        out.append(f"{name(b)}: autoscaled")
    return out


def check_workers(objs: list[Obj]) -> list[str]:
    """Every worker drains before it stops and outlives the longest task, and a prefork
    worker recycles a child (celery.worker_max_memory_per_child_bytes) before the
    container's memory limit would OOM-kill the whole pod with its tasks."""
    s = mesh_settings(objs)
    limit_s = s.celery.task_time_limit_s
    out = []
    for o in filter(is_worker, objs):
        spec = pod_spec(o) or {}
        a = args_of(o)
        pool = a[a.index("--pool") + 1] if "--pool" in a else "prefork"
        if pool == "prefork":
            procs = int(a[a.index("--concurrency") + 1]) if "--concurrency" in a \
                else s.celery.worker_concurrency
            need = procs * s.celery.worker_max_memory_per_child_bytes + PARENT_OVERHEAD_BYTES
            limit = spec["containers"][0].get("resources", {}).get("limits", {}).get("memory")
            if limit is None or memory_bytes(limit) < need:
                out.append(f"{name(o)}: memory limit {limit} < {procs} x max_memory_per_child "
                           f"+ 512Mi ({need // 2**20}Mi)")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= limit_s:
            out.append(f"{name(o)}: terminationGracePeriodSeconds {grace} <= task_time_limit_s {limit_s}")
        pre = spec["containers"][0].get("lifecycle", {}).get("preStop", {}).get("exec", {})
        if pre.get("command", [])[:2] != ["mesh", "drain"]:
            out.append(f"{name(o)}: no preStop drain")
    return out


def check_gpu(objs: list[Obj]) -> list[str]:
    """GPU workers request a GPU, land on GPU nodes, tolerate their taint, prefetch one."""
    gpu = [o for o in filter(is_worker, objs) if {"gpu", "gpu-batch"} & set(worker_queues(o))]
    if not gpu:
        return ["no worker consumes the gpu queues"]
    out = []
    for o in gpu:
        spec = pod_spec(o) or {}
        c = spec["containers"][0]
        if int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) < 1:
            out.append(f"{name(o)}: no nvidia.com/gpu limit")
        if not spec.get("nodeSelector"):
            out.append(f"{name(o)}: no nodeSelector for GPU nodes")
        if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
            out.append(f"{name(o)}: does not tolerate the nvidia.com/gpu taint")
        a = args_of(o)
        threads = a[a.index("--concurrency") + 1] if "--concurrency" in a else "1"
        if int(threads) < mesh_settings(objs).gpu.max_batch:
            out.append(f"{name(o)}: concurrency {threads} < gpu.max_batch: a micro-batch never fills")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        prefetch = env.get("MESH_CELERY_PREFETCH_MULTIPLIER",
                           str(mesh_settings(objs).celery.prefetch_multiplier))
        if prefetch != "1":
            out.append(f"{name(o)}: prefetch multiplier {prefetch} (must be 1)")
    return out


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod_labels(o: Obj) -> dict[str, str]:
    return o["spec"]["template"]["metadata"].get("labels", {})


def check_network(objs: list[Obj]) -> list[str]:
    pols = [o for o in objs if o["kind"] == "NetworkPolicy"]
    out = []
    if not any(p["spec"].get("podSelector") == {} and "ingress" not in p["spec"]
               and "Ingress" in p["spec"].get("policyTypes", []) for p in pols):
        out.append("no default-deny ingress NetworkPolicy")

    def sources(labels: dict[str, str]) -> list[dict[str, Any]]:
        return [src for p in pols if _selects(p["spec"]["podSelector"], labels)
                for rule in p["spec"].get("ingress", []) for src in rule.get("from", [{}])]

    for o in workloads(objs):
        labels = _pod_labels(o)
        comp = labels.get("app.kubernetes.io/component", "")
        ports = {p.get("name") for c in (pod_spec(o) or {})["containers"] for p in c.get("ports", [])}
        if comp == "flower" or "metrics" in ports:
            for src in sources(labels):
                ns = src.get("namespaceSelector", {}).get("matchLabels", {})
                if ns.get("kubernetes.io/metadata.name") != "monitoring":
                    out.append(f"{name(o)}: reachable from outside the monitoring namespace: {src}")
            if not sources(labels):
                out.append(f"{name(o)}: no policy opens its port to monitoring")
        if comp == "redis":
            if not sources(labels):
                out.append(f"{name(o)}: no policy for Redis")
            for src in sources(labels):
                mesh_pods = src.get("podSelector", {}).get("matchLabels") == {"mesh.io/redis-client": "true"}
                keda = src.get("namespaceSelector", {}).get("matchLabels", {}).get(
                    "kubernetes.io/metadata.name") == "keda"
                if not (mesh_pods and "namespaceSelector" not in src) and not keda:
                    out.append(f"{name(o)}: Redis reachable from {src}")
    return out


def check_rbac(objs: list[Obj]) -> list[str]:
    out = [f"{name(o)}: cluster-wide RBAC" for o in objs
           if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Role"}
    for b in (o for o in objs if o["kind"] == "RoleBinding"):
        role = roles.get(b["roleRef"]["name"])
        if role is None:
            out.append(f"{name(b)}: binds a role not defined here ({b['roleRef']['name']})")
            continue
        subjects = {s["name"] for s in b.get("subjects", [])}
        for rule in role.get("rules", []):
            if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
                out.append(f"{name(role)}: wildcard rule {rule}")
            writes = WRITE_VERBS & set(rule.get("verbs", []))
            scales = {"deployments", "deployments/scale"} & set(rule.get("resources", []))
            if writes and scales:
                if subjects != {AUTOSCALER_SA}:
                    out.append(f"{name(role)}: {sorted(subjects)} may write {sorted(scales)}")
                if rule.get("resourceNames") != [GPU_DEPLOYMENT]:
                    out.append(f"{name(role)}: scale write not limited to {GPU_DEPLOYMENT}")
    for o in workloads(objs):
        spec = pod_spec(o) or {}
        if (spec.get("serviceAccountName") != AUTOSCALER_SA
                and spec.get("automountServiceAccountToken") is not False):
            out.append(f"{name(o)}: mounts an API token it does not need")
    return out


def check_pdbs(objs: list[Obj]) -> list[str]:
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    out = []
    for o in workloads(objs):
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        mine = [p for p in pdbs if _selects(p["spec"]["selector"], _pod_labels(o))]
        if not mine:
            out.append(f"{name(o)}: no PodDisruptionBudget")
        replicas = o["spec"].get("replicas", 1)
        for p in mine:
            if int(p["spec"].get("minAvailable", 0)) >= max(replicas, 1):
                out.append(f"{name(p)}: minAvailable blocks every drain of {name(o)}")
    return out


def check_autoscaling(objs: list[Obj]) -> list[str]:
    """KEDA only (no HPA of ours); the triggers read the real queue lists; the GPU pool
    scales to zero and is pre-warmed for every off-peak window of the settings."""
    out = [f"{name(o)}: HPA (KEDA owns scaling)" for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    scaled = [o for o in objs if o["kind"] == "ScaledObject"]
    if not scaled:
        return out
    s = mesh_settings(objs)
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    for so in scaled:
        target = deployments.get(so["spec"]["scaleTargetRef"]["name"])
        if target is None:
            out.append(f"{name(so)}: targets no Deployment here")
            continue
        queues = set(worker_queues(target))
        lists = {t["metadata"]["listName"] for t in so["spec"]["triggers"] if t["type"] == "redis"}
        want = {f"{s.redis.key_prefix}:celery:{q}" for q in queues}
        if lists != want:
            out.append(f"{name(so)}: triggers read {sorted(lists)}, the worker consumes {sorted(want)}")
        if "replicas" in target["spec"]:
            out.append(f"{name(target)}: sets replicas although KEDA scales it")
    gpu = [so for so in scaled if so["spec"]["scaleTargetRef"]["name"] == s.gpu.deployment]
    for so in gpu:
        spec = so["spec"]
        if spec.get("minReplicaCount", 0) != s.gpu.min_workers:
            out.append(f"{name(so)}: minReplicaCount != gpu.min_workers {s.gpu.min_workers}")
        if spec.get("maxReplicaCount") != s.gpu.max_workers:
            out.append(f"{name(so)}: maxReplicaCount != gpu.max_workers {s.gpu.max_workers}")
        for t in spec["triggers"]:
            expected = (str(s.gpu.target_per_worker) if t["type"] == "redis"
                        else str(s.gpu.prewarm_workers))
            got = t["metadata"].get("listLength" if t["type"] == "redis" else "desiredReplicas")
            if got != expected:
                out.append(f"{name(so)}: {t['type']} trigger says {got}, the GPU policy {expected}")
        zones = sorted(t["metadata"]["timezone"] for t in so["spec"]["triggers"] if t["type"] == "cron")
        want_zones = sorted(w.split()[-1] for w in s.gpu.offpeak_windows) if s.gpu.prewarm_workers else []
        if zones != want_zones:
            out.append(f"{name(so)}: cron triggers {zones} != off-peak windows {s.gpu.offpeak_windows}")
    return out


def check_ports(objs: list[Obj]) -> list[str]:
    """Container ports agree with the port settings the processes read."""
    s = mesh_settings(objs)
    out = []
    for o in (o for o in objs if o["kind"] == "Deployment"):
        a = args_of(o)
        want = ({"metrics": s.monitoring.metrics_port} if is_worker(o) or a[:1] in (["dispatcher"], ["beat"])
                else {"metrics": s.monitoring.exporter_port} if a[:1] == ["exporter"]
                else {"http": s.monitoring.flower_port} if a[:1] == ["flower"] else {})
        ports = {p["name"]: p["containerPort"] for p in (pod_spec(o) or {})["containers"][0].get("ports", [])}
        for port_name, number in want.items():
            if ports.get(port_name) != number:
                out.append(f"{name(o)}: port {port_name} is {ports.get(port_name)}, "
                           f"the settings say {number}")
    return out


CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "resources": check_resources,
    "security": check_security,
    "probes": check_probes,
    "images": check_images,
    "secrets": check_secrets,
    "settings": check_settings,
    "beat": check_beat,
    "workers": check_workers,
    "network": check_network,
    "rbac": check_rbac,
    "pdbs": check_pdbs,
    "autoscaling": check_autoscaling,
    "ports": check_ports,
    "exposure": check_exposure,
}
GPU_CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {"gpu": check_gpu}
"""Only for overlays with a GPU node pool (dev runs its GPU-queue worker on CPU)."""


def run_checks(objs: list[Obj], gpu_pool: bool) -> dict[str, list[str]]:
    checks = {**CHECKS, **(GPU_CHECKS if gpu_pool else {})}
    return {n: fn(objs) for n, fn in checks.items()}
