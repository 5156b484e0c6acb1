"""Flow control is visible: `mesh status` shows each limit's use and waiting steps
(text and --json), and `mesh exporter`'s collector exports them as metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.procs import ROOT, child_env
from worker_mesh.mesh.flow import ConcurrencyLimiter, Lease, Permit, RateLimiter, Wait
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.monitoring.collector import MeshCollector

LIMITS = '{"llm": {"requests_per_interval": 2, "tokens_per_interval": 1000, "wait_sla_s": 30}}'


def _flow_settings(settings: MeshSettings) -> MeshSettings:
    return MeshSettings.load(settings.to_env() | {
        "MESH_FLOW_LIMITS": LIMITS, "MESH_FLOW_CONCURRENCY": '{"content.customer": 1}',
        "MESH_FLOW_BURST_FRACTION": "1"})


def _load(s: MeshSettings, r: redis.Redis) -> None:
    """Two admitted calls (one reconciled), two waiting steps, one held slot, one waiter."""
    keys = Keys(s.redis.key_prefix)
    rl = RateLimiter(r, keys, s.flow)
    first = rl.acquire("llm", ticket="a", tokens=400)
    assert isinstance(first, Permit)
    first.reconcile(120)
    assert isinstance(rl.acquire("llm", ticket="b", tokens=300), Permit)
    assert isinstance(rl.acquire("llm", ticket="c", tokens=300), Wait)
    assert isinstance(rl.acquire("llm", ticket="d", tokens=300), Wait)
    cl = ConcurrencyLimiter(r, keys, s.flow)
    assert isinstance(cl.acquire("content.customer", "c1", "s1"), Lease)
    assert isinstance(cl.acquire("content.customer", "c1", "s2"), Wait)


def test_mesh_status_shows_limits_use_and_waiting_steps(settings: MeshSettings,
                                                        r: redis.Redis) -> None:
    s = _flow_settings(settings)
    _load(s, r)
    run = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "status", "--json"], cwd=ROOT,
                         env=child_env(s), capture_output=True, text=True, timeout=120)
    flow = json.loads(run.stdout)["flow"]
    (llm,) = flow["limits"]
    assert (llm["resource"], llm["window_requests"], llm["window_tokens"]) == ("llm", 2, 420)
    assert (llm["limit_requests"], llm["limit_tokens"], llm["waiting"]) == (2, 1000, 2)
    assert (llm["admitted"], llm["throttled"], llm["over_sla"]) == (2, 2, False)
    (conc,) = flow["concurrency"]
    assert (conc["name"], conc["running"], conc["waiting"], conc["keys_busy"]) == (
        "content.customer", 1, 1, 1)
    text = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "status"], cwd=ROOT,
                          env=child_env(s, {"COLUMNS": "200"}), capture_output=True, text=True,
                          timeout=120).stdout
    assert "rate limits" in text and "2/2 (100%)" in text and "420/1000 (42%)" in text
    assert "concurrency keys" in text and "content.customer" in text


def test_the_exporter_exports_flow_state(settings: MeshSettings, r: redis.Redis) -> None:
    s = _flow_settings(settings)
    _load(s, r)
    registry = CollectorRegistry()
    registry.register(MeshCollector(r, s, lambda: []))
    text = generate_latest(registry).decode()
    assert 'mesh_ratelimit_window_tokens{name="llm"} 420.0' in text
    assert 'mesh_ratelimit_waiting_steps{kind="rate",name="llm"} 2.0' in text
    assert 'mesh_ratelimit_wait_sla_seconds{kind="rate",name="llm"} 30.0' in text
    assert 'mesh_ratelimit_waiting_steps{kind="concurrency",name="content.customer"} 1.0' in text
    assert 'mesh_concurrency_running{name="content.customer"} 1.0' in text
