"""Policy check ``exposure``: what each pod exposes, and to whom (docs/security.md).

* a container with a ``metrics`` port listens beyond loopback
  (``MESH_MONITORING_METRICS_ADDRESS``: the default 127.0.0.1 would make it unscrapable),
  and only Prometheus may reach that port: every NetworkPolicy source of it selects the
  ``monitoring`` namespace *and* Prometheus pods in the same ``from`` element;
* Flower is closed: its credentials come from a required Secret (or a file setting),
  its arguments carry no secret and no ``--no-auth``.
"""

from __future__ import annotations

from typing import Any

from worker_mesh.workers.cli._k8s import Obj
from worker_mesh.workers.cli._k8s_objects import args_of, mesh_settings, name, pod_spec, workloads

PROMETHEUS_PODS = {"app.kubernetes.io/name": "prometheus"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}
FLOWER_AUTH = ("MESH_MONITORING_FLOWER_BASIC_AUTH", "MESH_MONITORING_FLOWER_BASIC_AUTH_FILE")


def _env(container: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((e for e in container.get("env", []) if e["name"] == key), None)


def _sources(pols: list[Obj], labels: dict[str, str], port: str) -> list[dict[str, Any]]:
    """The ``from`` elements of every policy rule that opens ``port`` of pods with ``labels``."""
    out = []
    for p in pols:
        sel = p["spec"]["podSelector"].get("matchLabels", {})
        if not all(labels.get(k) == v for k, v in sel.items()):
            continue
        for rule in p["spec"].get("ingress", []):
            ports = {str(x.get("port")) for x in rule.get("ports", [])}
            if not ports or port in ports:
                out += rule.get("from", [{}])
    return out


def _metrics_problems(o: Obj, c: dict[str, Any], address: str, pols: list[Obj]) -> list[str]:
    out = []
    own = _env(c, "MESH_MONITORING_METRICS_ADDRESS")
    effective = own.get("value", address) if own else address
    if effective.startswith("127.") or effective in ("localhost", "::1"):
        out.append(f"{name(o)}: /metrics listens on {effective}: Prometheus cannot scrape it "
                   "(set MESH_MONITORING_METRICS_ADDRESS=0.0.0.0 for pods)")
    labels = o["spec"]["template"]["metadata"].get("labels", {})
    sources = _sources(pols, labels, "metrics")
    if not sources:
        out.append(f"{name(o)}: no NetworkPolicy admits Prometheus to its metrics port")
    for src in sources:
        ns = src.get("namespaceSelector", {}).get("matchLabels", {})
        pods = src.get("podSelector", {}).get("matchLabels", {})
        if ns != MONITORING_NS or pods != PROMETHEUS_PODS:
            out.append(f"{name(o)}: metrics port reachable by more than Prometheus: {src}")
    return out


def _flower_problems(o: Obj, c: dict[str, Any]) -> list[str]:
    out = []
    for arg in args_of(o):
        flag = arg.split("=", 1)[0].lstrip("-").replace("-", "_")
        if flag in ("no_auth", "basic_auth", "oauth2_secret", "cookie_secret"):
            out.append(f"{name(o)}: Flower argument {arg.split('=', 1)[0]} (open, or a secret "
                       "that ps shows)")
    auth = _env(c, FLOWER_AUTH[0])
    ref = (auth or {}).get("valueFrom", {}).get("secretKeyRef")
    if not (ref and not ref.get("optional")) and _env(c, FLOWER_AUTH[1]) is None:
        out.append(f"{name(o)}: Flower credentials are not from a required Secret "
                   f"({FLOWER_AUTH[0]} secretKeyRef, optional: false)")
    return out


def check_exposure(objs: list[Obj]) -> list[str]:
    address = mesh_settings(objs).monitoring.metrics_address
    pols = [o for o in objs if o["kind"] == "NetworkPolicy"]
    out: list[str] = []
    for o in workloads(objs):
        for c in (pod_spec(o) or {}).get("containers", []):
            if any(p.get("name") == "metrics" for p in c.get("ports", [])):
                out += _metrics_problems(o, c, address, pols)
        if o["kind"] == "Deployment" and args_of(o)[:1] == ["flower"]:
            out += _flower_problems(o, (pod_spec(o) or {})["containers"][0])
    return out
