"""``mesh gpu autoscale``: apply the pool policy to the GPU Deployment (clusters
without KEDA).

Each tick: read the Deployment's ``scale`` subresource, observe the GPU queues (queued +
reserved/unacked), held work, the next window and which worker pods have a task in
progress; ask ``gpu_pool.policy.desired_workers``; mark busy pods with a high
``controller.kubernetes.io/pod-deletion-cost`` (and idle ones with 0) so the ReplicaSet
removes idle pods first; never go below the number of busy pods; then patch the scale
with the ``resourceVersion`` it read (optimistic concurrency).

Kubernetes errors are translated here (kopf-style): 409 -> ``ScaleConflict`` (someone
else changed the Deployment; re-read next tick), 403 -> ``KubeForbidden`` naming the
verb and resource to grant, 404 -> ``NotFound``, 5xx/connection -> ``KubeUnavailable``.
The loop logs them and backs off; it never crash-loops. Response bodies are reduced to
the Status ``message`` (no tokens or object dumps in logs).

Least-privilege RBAC (see docs/gpu-pool.md): ``apps/deployments/scale``: get, patch;
``pods``: list, patch — in the pool's namespace only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.policy import Decision, Observation, PolicyConfig, PolicyState, desired_workers
from worker_mesh.gpu_pool.queues import depths
from worker_mesh.mesh.errors import ConfigError, NotFound, TransientError
from worker_mesh.mesh.extras import require
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.outage import OutageLog
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings import GpuSettings

log = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
BUSY_COST = "10000"
IDLE_COST = "0"
MERGE_PATCH = "application/merge-patch+json"


class KubeForbidden(ConfigError):
    """The service account lacks a permission; the message names the missing rule."""


class ScaleConflict(TransientError):
    """The Deployment changed between our read and our patch (HTTP 409)."""


class KubeUnavailable(TransientError):
    """The API server is unreachable or answered 5xx."""


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    try:
        msg = json.loads(body).get("message", "") if body else ""
    except (ValueError, AttributeError):
        msg = ""
    return str(msg)[:300] or str(getattr(exc, "reason", "") or "")


def translate(exc: Exception, verb: str, resource: str, namespace: str) -> Exception:
    """A kubernetes-client error as a MeshError saying what to do about it."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status, detail = exc.status, _status_message(exc)
        if status == 403:
            return KubeForbidden(
                f"forbidden: cannot {verb} {resource} in namespace {namespace!r}; grant the "
                f"controller's service account {verb!r} on {resource!r} (see docs/gpu-pool.md, "
                f"RBAC). API said: {detail}")
        if status == 409:
            return ScaleConflict(f"conflict on {verb} {resource}: changed since read; "
                                 f"re-reading next tick ({detail})")
        if status == 404:
            return NotFound(f"{resource} not found in namespace {namespace!r} ({detail})")
        if status == 401:
            return ConfigError(f"unauthorized calling the API server ({detail})")
        return KubeUnavailable(f"{verb} {resource}: HTTP {status} {detail}")
    return KubeUnavailable(f"{verb} {resource}: {type(exc).__name__}: {exc}")


@dataclass
class TickResult:
    current: int
    desired: int
    applied: bool
    reason: str
    busy_pods: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def busy_hosts(client: redis.Redis, keys: Keys, now_s: float, stale_s: float) -> set[str]:
    """Worker hosts (pod names) with a GPU task in progress, from the workers' own
    counters; entries not updated for ``stale_s`` (a crashed worker) are ignored."""
    with translate_errors("read busy GPU workers"):
        counts = client.hgetall(keys.gpu_busy())
        seen = client.hgetall(keys.gpu_busy_seen())
    out = set()
    for k, v in counts.items():
        host = k.decode() if isinstance(k, bytes) else k
        ts = float(seen.get(k, 0) or 0)
        if int(v) > 0 and now_s - ts < stale_s:
            out.add(host)
    return out


def observe(client: redis.Redis, keys: Keys, gpu: GpuSettings, now: datetime, current: int,
            busy: int = 0) -> Observation:
    d = depths(client, keys)
    with translate_errors("count held GPU work"):
        held = int(client.zcard(keys.gpu_held_order()))
    return Observation(now=now.timestamp(), current=current, queued=d.total_queued,
                       reserved=d.total_reserved, held=held,
                       seconds_until_window=Windows.parse(gpu.offpeak_windows)
                       .seconds_until_open(now), busy_workers=busy)


class Controller:
    """One GPU Deployment, one policy. ``api_client`` is a ``kubernetes.client.ApiClient``
    (in-cluster or kubeconfig in production; a local stub in tests)."""

    def __init__(self, api_client: Any, client: redis.Redis, keys: Keys, gpu: GpuSettings, *,
                 stale_busy_s: float = 3600.0, dry_run: bool = False) -> None:
        from kubernetes import client as k8s

        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.r = client
        self.keys = keys
        self.gpu = gpu
        self.cfg = PolicyConfig.from_settings(gpu)
        self.ns = gpu.namespace
        self.name = gpu.deployment
        self.stale_busy_s = stale_busy_s
        self.dry_run = dry_run
        self.state = self._load_state()

    # -- state survives controller restarts (cooldown, idle timer) ---------------------
    def _state_key(self) -> str:
        return self.keys.ns("gpu", "autoscale")

    def _load_state(self) -> PolicyState:
        try:
            raw = self.r.get(self._state_key())
            return PolicyState(**json.loads(raw)) if raw else PolicyState()
        except Exception:
            return PolicyState()

    def _save_state(self, desired: int) -> None:
        with translate_errors("save autoscaler state"):
            self.r.set(self._state_key(), json.dumps(asdict(self.state)))
            self.r.set(self.keys.ns("gpu", "autoscale", "desired"), desired)

    # -- kubernetes calls, errors translated ------------------------------------------
    def read_scale(self) -> tuple[int, str | None]:
        try:
            s = self.apps.read_namespaced_deployment_scale(self.name, self.ns)
        except Exception as exc:
            raise translate(exc, "get", "deployments/scale", self.ns) from exc
        replicas = s.spec.replicas if s.spec is not None else 0
        rv = s.metadata.resource_version if s.metadata is not None else None
        return int(replicas or 0), rv

    def patch_scale(self, replicas: int, resource_version: str | None) -> None:
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self.apps.patch_namespaced_deployment_scale(
                self.name, self.ns, body, _content_type=MERGE_PATCH,
                dry_run="All" if self.dry_run else None)
        except Exception as exc:
            raise translate(exc, "patch", "deployments/scale", self.ns) from exc

    def mark_pods(self, busy: set[str]) -> list[str]:
        """Set deletion cost: busy pods high, idle pods 0 (only where it changes).
        Returns the names of the pool's pods that are busy."""
        try:
            pods = self.core.list_namespaced_pod(self.ns, label_selector=self.gpu.pod_selector)
        except Exception as exc:
            raise translate(exc, "list", "pods", self.ns) from exc
        busy_pods = []
        for pod in pods.items:
            if pod.metadata is None or not pod.metadata.name:
                continue
            name = pod.metadata.name
            want = BUSY_COST if name in busy else IDLE_COST
            if name in busy:
                busy_pods.append(name)
            have = (pod.metadata.annotations or {}).get(DELETION_COST)
            if have == want or (have is None and want == IDLE_COST):
                continue
            try:
                if not self.dry_run:
                    self.core.patch_namespaced_pod(
                        name, self.ns, {"metadata": {"annotations": {DELETION_COST: want}}},
                        _content_type=MERGE_PATCH)
            except Exception as exc:
                raise translate(exc, "patch", "pods", self.ns) from exc
        return sorted(busy_pods)

    # -- one tick ----------------------------------------------------------------------
    def tick(self, now: datetime) -> TickResult:
        current, rv = self.read_scale()
        busy = busy_hosts(self.r, self.keys, now.timestamp(), self.stale_busy_s)
        try:
            busy_pods = self.mark_pods(busy)
            busy_n = len(busy_pods)
        except KubeForbidden as exc:
            # Without pod access busy pods cannot be protected: never scale down then.
            log.error("%s; scale-down disabled until this is fixed", exc)
            busy_pods, busy_n = [], current
        obs = observe(self.r, self.keys, self.gpu, now, current, busy_n)
        decision: Decision = desired_workers(obs, self.cfg, self.state)
        result = TickResult(current, decision.desired, False, decision.reason, busy_pods)
        if decision.desired != current:
            self.patch_scale(decision.desired, rv)  # 409/403 raise; state not advanced
            result.applied = True
            log.info("scaled %s/%s %d -> %d: %s", self.ns, self.name, current,
                     decision.desired, decision.reason)
        self.state = decision.state
        self._save_state(decision.desired)
        return result

    def run(self, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
            sleep: Callable[[float], object] = time.sleep, stop: threading.Event | None = None,
            max_ticks: int | None = None,
            on_tick: Callable[[TickResult], None] | None = None) -> list[TickResult]:
        """Tick until stopped. Errors are logged with their message and retried with
        backoff (up to 10 x the interval); the process never crash-loops."""
        results: list[TickResult] = []
        interval = self.gpu.autoscale_interval_s
        backoff = interval
        ticks = 0
        outage = OutageLog(log, "autoscale")
        while not (stop and stop.is_set()) and (max_ticks is None or ticks < max_ticks):
            ticks += 1
            delay = interval
            try:
                res = self.tick(clock())
                backoff = interval
                outage.ok()
            except ScaleConflict as exc:
                res = TickResult(-1, -1, False, "conflict", error=str(exc))
                delay = min(interval, 1.0)  # re-read soon
            except (KubeForbidden, NotFound, ConfigError, TransientError) as exc:
                res = TickResult(-1, -1, False, "error", error=str(exc))
                delay, backoff = backoff, min(backoff * 2, interval * 10)
                outage.failed(exc, delay)  # logged once per change of state
            results.append(res)
            if on_tick:
                on_tick(res)
            if max_ticks is not None and ticks >= max_ticks:
                break
            sleep(delay)
        return results


def api_client_from_env(host: str | None = None) -> Any:
    """In-cluster config when running in a pod, else kubeconfig; ``host`` overrides."""
    require("kubernetes", "k8s")
    from kubernetes import client as k8s
    from kubernetes import config

    if host:
        cfg = k8s.Configuration()
        cfg.host = host
        return k8s.ApiClient(cfg)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return k8s.ApiClient()
