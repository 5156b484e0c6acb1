"""Closed by default: Flower needs credentials (UI, API and /metrics), which come from a
setting and appear in no process's command line; every /metrics listens on loopback
unless ``monitoring.metrics_address`` says otherwise.

Given the TLS + ACL Redis of ``secure_redis``, when Flower (credentials from
MESH_MONITORING_FLOWER_BASIC_AUTH), ``mesh exporter`` and a dispatcher with a metrics
port run on their defaults, then Flower answers 401 without (or with wrong) credentials
on every page, API and /metrics, 200 with them; ``/proc/*/cmdline`` of every process
holds neither Flower's nor Redis's password; the metrics sockets are bound to 127.0.0.1.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.reliability.conftest import SecureRedis
from tests.reliability.test_fail_fast import leaks
from tests.support.procs import ROOT, Proc, child_env, start, wait_for
from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.e2e

PROTECTED = ["/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks",
             "/api/task/types", "/api/queues/length", "/metrics"]


def status_of(url: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def listen_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (/proc/net/tcp, IPv4)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            out.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def all_cmdlines() -> str:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                continue
    return "\n".join(out)


def _mesh(s: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                          env=child_env(s), capture_output=True, text=True, timeout=60)


def test_flower_is_closed_and_metrics_bind_loopback(secure_redis: SecureRedis, tmp_path: Path) -> None:
    t = secure_redis.tenants[0]
    flower_pw = "fl-" + secrets.token_hex(12)
    ports = {k: free_port() for k in ("flower", "open", "exporter", "dispatcher")}
    s = secure_redis.settings(t, tmp_path, MESH_MONITORING_FLOWER_BASIC_AUTH=f"ops:{flower_pw}",
                              MESH_MONITORING_EXPORTER_PORT=str(ports["exporter"]),
                              MESH_MONITORING_METRICS_PORT=str(ports["dispatcher"]))
    logs = tmp_path / "logs"
    procs: list[Proc] = [
        start("flower", ["flower", "--port", str(ports["flower"])], s, logs),
        start("flower-open", ["flower", "--port", str(ports["open"]), "--no-auth"], s, logs),
        start("exporter", ["exporter"], s, logs),
        start("dispatcher", ["dispatcher"], s, logs),
    ]
    try:
        base, open_base = (f"http://127.0.0.1:{ports[k]}" for k in ("flower", "open"))
        for url in (f"{base}/healthcheck", f"{open_base}/healthcheck",
                    f"http://127.0.0.1:{ports['exporter']}/metrics",
                    f"http://127.0.0.1:{ports['dispatcher']}/metrics"):
            wait_for(lambda u=url: status_of(u) == 200, 90, interval_s=0.5, what=url)
        # Flower: 401 without or with wrong credentials, everywhere but the probe endpoint.
        denied = {p: (status_of(base + p), status_of(base + p, ("ops", "wrong-" + flower_pw)))
                  for p in PROTECTED}
        assert {p: v for p, v in denied.items() if v != (401, 401)} == {}
        for p in ("/metrics", "/api/workers", "/api/task/types"):
            assert status_of(base + p, ("ops", flower_pw)) == 200, p
        # --no-auth is the explicit way to open it (local use).
        assert status_of(f"{open_base}/api/workers") == 200
        assert status_of(f"{open_base}/metrics") == 200
        # No password in any process's command line (ps).
        cmdlines = all_cmdlines()
        assert "flower" in cmdlines
        for secret, user in ((flower_pw, "ops"), (t.password, t.user),
                             (secure_redis.admin_password, "default")):
            assert leaks(cmdlines, secret, user) == []
        # Metrics listen on loopback by default (monitoring.metrics_address).
        for k in ("exporter", "dispatcher", "flower"):
            assert listen_addresses(ports[k]) == {"127.0.0.1"}, k
    finally:
        for p in procs:
            p.stop()
    for p in procs:
        assert leaks(p.output(), flower_pw, "ops") == [], p.name
    assert "basic auth (ops)" in procs[0].output()
    assert "NO AUTHENTICATION" in procs[1].output()


def test_flower_refuses_to_start_open_or_with_a_password_in_argv(
        secure_redis: SecureRedis, tmp_path: Path) -> None:
    s = secure_redis.settings(secure_redis.tenants[0], tmp_path)
    missing = _mesh(s, "flower")
    assert missing.returncode == 2
    assert "mesh flower needs credentials" in missing.stderr
    in_argv = _mesh(s, "flower", "--basic_auth=ops:hunter2-visible")
    assert in_argv.returncode == 2
    assert "visible in ps" in in_argv.stderr and "hunter2-visible" not in in_argv.stderr
    bad_file = _mesh(MeshSettings.load(s.to_env() | {
        "MESH_MONITORING_FLOWER_BASIC_AUTH_FILE": str(tmp_path / "nope")}), "flower")
    assert bad_file.returncode == 2 and "cannot read" in bad_file.stderr
