"""Navigating rendered manifests: pod specs, containers, worker arguments, quantities.

Shared by the policy checks (``_k8s_policy``) so each check reads as the rule it states.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from worker_mesh.mesh.settings import MeshSettings, setting_names
from worker_mesh.workers.cli._k8s import Obj, settings_configmap

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def secret_setting_names() -> set[str]:
    """MESH_* names whose setting is a SecretStr: they may only come from a Secret."""
    names = set()
    for env, model in setting_names().items():
        for field_name, field in model.model_fields.items():
            if env.endswith("_" + field_name.upper()) and "SecretStr" in str(field.annotation):
                names.add(env)
    return names


def name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: Obj) -> dict[str, Any] | None:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj: Obj) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = pod_spec(obj)
    if spec is None:
        return
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        yield f"{name(obj)}[{c['name']}]", c


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOADS]


def args_of(obj: Obj) -> list[str]:
    spec = pod_spec(obj) or {}
    c = spec.get("containers", [{}])[0]
    return [*c.get("command", []), *c.get("args", [])]


def is_worker(obj: Obj) -> bool:
    return obj["kind"] == "Deployment" and args_of(obj)[:1] == ["worker"]


def worker_queues(obj: Obj) -> list[str]:
    a = args_of(obj)
    for flag in ("--queues", "-Q"):
        if flag in a:
            return a[a.index(flag) + 1].split(",")
    return []


def mesh_settings(objs: list[Obj]) -> MeshSettings:
    return MeshSettings.load(settings_configmap(objs))


QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``3Gi``, ``512Mi``, ``1G``) in bytes."""
    m = QUANTITY.match(str(quantity))
    if not m:
        raise ValueError(f"unsupported memory quantity {quantity!r}")
    return int(float(m.group(1)) * UNITS[m.group(2)])
