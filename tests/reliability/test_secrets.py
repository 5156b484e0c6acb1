"""Secrets never leave: the whole mesh (dispatcher, worker, CLI, exporter, Sentry) runs
over TLS as a least-privilege ACL user, with a known Redis password and a known Sentry
key; the test then greps everything the mesh printed, served or sent for both.

Also proves that the ACL rule is enough for the operator commands (``mesh status``,
``mesh audit``, ``mesh dlq list``): each exits 0 as the confined user.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monitoring import sentry_collector
from tests.reliability.conftest import SecureRedis
from tests.support.procs import ROOT, Proc, child_env, start, wait_for
from worker_mesh.events.catalog import CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.e2e


@pytest.fixture
def collector() -> Iterator[sentry_collector.Collector]:
    c = sentry_collector.start()
    yield c
    c.stop()


def _cli(s: MeshSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                          env=child_env(s), capture_output=True, text=True, timeout=120)


def _activity(cid: str) -> CustomerActivity:
    return CustomerActivity(customer_id=cid, logins_30d=1, active_days_30d=1)


def test_no_secret_in_logs_cli_metrics_or_sentry(
        secure_redis: SecureRedis, collector: sentry_collector.Collector, tmp_path: Path) -> None:
    tenant = secure_redis.tenants[1]
    sentry_key = "sk" + secrets.token_hex(16)
    dsn = collector.dsn.replace("publickey", sentry_key)
    s = secure_redis.settings(tenant, tmp_path, MESH_MONITORING_SENTRY_DSN=dsn,
                              MESH_MONITORING_ENVIRONMENT="test")
    flower_password = "fl-" + secrets.token_hex(12)
    s = MeshSettings.load(s.to_env() | {"MESH_MONITORING_FLOWER_BASIC_AUTH": f"ops:{flower_password}"})
    known = [tenant.password, secure_redis.admin_password, sentry_key, flower_password]
    keys = Keys(s.redis.key_prefix)
    r = make_client(s.redis)
    exporter_port, flower_port = free_port(), free_port()
    procs: list[Proc] = [
        start("worker", ["worker", "-Q", "cpu", "-c", "1", "--pool", "solo"], s, tmp_path / "logs"),
        start("dispatcher", ["dispatcher"], s, tmp_path / "logs"),
        start("exporter", ["exporter", "--port", str(exporter_port), "--address", "127.0.0.1"],
              s, tmp_path / "logs"),
        start("flower", ["flower", "--port", str(flower_port)], s, tmp_path / "logs"),
    ]
    try:
        # Given work that succeeds, work that fails (reaches Sentry) and a bad entry (DLQ),
        pub = Publisher(r, s.streams, keys)
        pub.publish_many([_activity(f"ok-{i}") for i in range(5)] + [_activity("fail-1")])
        r.xadd(keys.stream(0), {"id": "junk", "type": "no.such.type", "v": "1",
                                "ts": "2026-01-01T00:00:00Z", "payload": "{}"})
        runs = keys.ns("probe", "runs")
        wait_for(lambda: r.llen(runs) >= 5, 90, what="the runs over TLS as the ACL user")
        wait_for(lambda: collector.of_type("event"), 90, what="the failure in Sentry")
        # when an operator runs every command,
        outputs: dict[str, str] = {}
        for args in (["settings"], ["settings", "--json"], ["status"], ["status", "--json"],
                     ["audit", "--json", "--wait-s", "30"], ["dlq", "list", "--json"]):
            res = _cli(s, *args)
            assert res.returncode == 0, f"mesh {' '.join(args)}: {res.stdout}{res.stderr}"[-2000:]
            outputs["mesh " + " ".join(args)] = res.stdout + res.stderr
        assert json.loads(outputs["mesh audit --json --wait-s 30"])
        metrics = wait_for(lambda: _get(f"http://127.0.0.1:{exporter_port}/metrics"), 60,
                           what="the exporter's /metrics")
        outputs["exporter /metrics"] = metrics
        # Flower works as the ACL user over TLS: it sees the worker and its tasks.
        flower = f"http://127.0.0.1:{flower_port}"
        auth = ("ops", flower_password)
        workers = wait_for(lambda: (w := _get(f"{flower}/api/workers?refresh=1", auth)) and "@" in w
                           and w, 90, interval_s=1, what="Flower listing the worker")
        pub.publish(_activity("seen-by-flower"))  # events are live: send one while it listens
        tasks = wait_for(lambda: (t := _get(f"{flower}/api/tasks", auth)) and "mesh.probe" in t and t,
                         90, interval_s=1, what="Flower seeing task events")
        outputs["flower"] = (workers + tasks + (_get(f"{flower}/broker", auth) or "")
                             + (_get(f"{flower}/metrics", auth) or ""))
        outputs["repr(settings)"] = repr(s) + str(s) + s.model_dump_json()
        outputs["sentry"] = collector.all_bytes().decode("utf-8", "replace")
    finally:
        for p in procs:
            p.stop()
    for p in procs:
        outputs[f"{p.name} log"] = p.output()
    assert "rediss://" in outputs["worker log"]  # the masked URL is shown, so TLS is on
    # then no known secret appears anywhere.
    # (Sentry's own key travels to Sentry in each envelope's header, by design of the
    # protocol: it is checked everywhere else.)
    outputs["sentry"] = "\n".join(_envelope_bodies(outputs["sentry"]))
    leaks = [(where, secret[:4] + "...") for where, text in outputs.items()
             for secret in known if secret in text]
    assert leaks == [], leaks
    assert len(outputs["sentry"]) > 100 and len(outputs["exporter /metrics"]) > 100


def _envelope_bodies(raw: str) -> list[str]:
    """The envelopes without the two header fields that carry Sentry's public key by
    protocol (``dsn``, ``trace.public_key``)."""
    out = []
    for line in raw.splitlines():
        try:
            head = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if isinstance(head, dict) and "sent_at" in head:  # an envelope header
            head.pop("dsn", None)
            if isinstance(head.get("trace"), dict):
                head["trace"].pop("public_key", None)
        out.append(json.dumps(head))
    return out


def _get(url: str, auth: tuple[str, str] | None = None) -> str | None:
    req = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None
