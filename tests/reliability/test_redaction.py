"""One redaction point, end to end: an LLM provider that echoes the request's
Authorization header (and the key itself) in its 500 and 400 error bodies.

Given a real dispatcher and worker with the OpenAI-compatible provider pointed at a
local server that answers 500 (retried), then 400 (permanent), both bodies quoting the
key, and Sentry reporting to a local collector, when a content request is published,
then the run is dead-lettered with the provider's (masked) body excerpt, Sentry gets the
failure, and the key appears nowhere: not in the dead-letter stream, not in anything
the mesh stored in Redis (results included), not in Sentry's events, not in any log,
not in ``mesh dlq list --json`` - in no spelling (raw, URL-encoded, base64).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.content.llm_server import Reply, llm_server
from tests.monitoring import sentry_collector
from tests.reliability.test_fail_fast import leaks
from tests.reliability.test_secrets import _envelope_bodies
from tests.support.procs import ROOT, child_env, start, wait_for
from worker_mesh.events.catalog import ContentRequested
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.e2e


@pytest.fixture
def collector() -> Iterator[sentry_collector.Collector]:
    c = sentry_collector.start()
    yield c
    c.stop()


def _echo(status: int, key: str) -> Reply:
    body = {"error": {"message": f"upstream said no to key {key}", "type": "server_error"},
            "request": {"headers": {"authorization": f"Bearer {key}", "api-key": key}}}
    return Reply(status, body=json.dumps(body))


def _redis_dump(r: redis.Redis, prefix: str) -> str:
    """Every value the mesh wrote under its prefix, as text (admin view)."""
    out = []
    for k in r.scan_iter(match=f"*{prefix}*", count=1000):
        t = r.type(k).decode()
        v: object = (r.get(k) if t == "string" else r.hgetall(k) if t == "hash"
                     else r.lrange(k, 0, -1) if t == "list" else r.xrange(k) if t == "stream"
                     else r.zrange(k, 0, -1) if t == "zset" else r.smembers(k) if t == "set" else "")
        out.append(f"{k!r} {v!r}")
    return "\n".join(out)


def test_a_key_echoed_by_the_provider_appears_nowhere(
        settings: MeshSettings, r: redis.Redis, collector: sentry_collector.Collector,
        tmp_path: Path) -> None:
    key = "sk-echo-" + secrets.token_hex(16)
    with llm_server([_echo(500, key), _echo(400, key)]) as srv:
        s = MeshSettings.load(settings.to_env() | {
            "MESH_LLM_PROVIDER": "openai", "MESH_LLM_BASE_URL": srv.url, "MESH_LLM_API_KEY": key,
            "MESH_MONITORING_SENTRY_DSN": collector.dsn, "MESH_MONITORING_ENVIRONMENT": "test"})
        logs = tmp_path / "logs"
        procs = [start("dispatcher", ["dispatcher"], s, logs),
                 start("worker", ["worker", "-Q", "cpu,io", "--pool", "threads", "-c", "2",
                                  "-l", "DEBUG"], s, logs)]
        try:
            keys = Keys(s.redis.key_prefix)
            Publisher(r, s.streams, keys).publish(ContentRequested(
                content_id="echo1", topic="Exporting your data", keywords=["export"]))
            dlq = DeadLetters(r, keys, s.streams)
            dead = wait_for(lambda: [d for d in dlq.list() if d.reason_code == "workflow_failed"],
                            timeout_s=120, interval_s=0.5, what="the run dead-lettered")
            wait_for(lambda: collector.of_type("event"), 60, interval_s=0.5, what="Sentry event")
            listed = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "dlq", "list", "--json"],
                                    cwd=ROOT, env=child_env(s), capture_output=True, text=True,
                                    timeout=60)
        finally:
            for p in procs:
                p.stop()
    # The key really went out, twice (the 500 was retried), in the Authorization header.
    assert [x.headers.get("Authorization") for x in srv.seen] == [f"Bearer {key}"] * 2
    # The excerpt of the provider's body is kept, with the key masked.
    assert "HTTP 400" in dead[0].error and "***" in dead[0].error, dead[0].error
    places = {
        "dead-letter stream": _redis_dump(r, s.redis.key_prefix),
        "mesh dlq list --json": listed.stdout + listed.stderr,
        "sentry": "\n".join(_envelope_bodies(collector.all_bytes().decode("utf-8", "replace"))),
        **{f"{p.name} log": p.output() for p in procs},
    }
    assert "ProviderError" in places["worker log"]  # the retry after the 500 was logged
    found = {where: leaks(text, key) for where, text in places.items()}
    assert {w: f for w, f in found.items() if f} == {}
