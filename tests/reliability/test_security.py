"""Security: TLS + password + least-privilege ACL user for every mesh component, fast and
clear failure on wrong credentials, tenants confined to their prefix.

Given a TLS-only redis-server (self-signed CA made by the test), a password on the
``default`` user and one ACL user per tenant (``mesh.redis_conn.acl_rule``), when the
publisher, a real worker and the result backend run as tenant A, then they work, and
nothing they do needs a key, channel or command outside tenant A's rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.reliability.conftest import SecureRedis
from tests.support.procs import Proc, start, wait_for
from tests.support.tls import make_ca_and_server_cert
from worker_mesh.events import CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.errors import BrokerUnavailable, ConfigError
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import check_connection, make_client, translate_errors
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app

pytestmark = pytest.mark.e2e


def _activity(i: int) -> CustomerActivity:
    return CustomerActivity(customer_id=str(i), logins_30d=i, active_days_30d=1)


@pytest.fixture(scope="module")
def tenant_a_worker(secure_redis: SecureRedis,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshSettings, Proc]]:
    tmp = tmp_path_factory.mktemp("tenant-a")
    s = secure_redis.settings(secure_redis.tenants[0], tmp)
    w = start("worker-a", ["worker", "-Q", "cpu", "-c", "1"], s, tmp / "logs")
    yield s, w
    w.stop()


def test_publisher_worker_and_result_backend_work_over_tls_as_acl_user(
        secure_redis: SecureRedis, tenant_a_worker: tuple[MeshSettings, Proc]) -> None:
    s, worker = tenant_a_worker
    keys = Keys(s.redis.key_prefix)
    client = make_client(s.redis)
    # Given the publisher of tenant A, when it publishes, then the entries are in A's stream.
    pub = Publisher(client, s.streams, keys)
    ids = [*pub.publish_many([_activity(i) for i in range(20)]), pub.publish(_activity(99))]
    assert len(set(ids)) == 21
    assert sum(client.xlen(keys.stream(p)) for p in range(s.streams.partitions)) == 21
    # And a task sent through the TLS broker runs in the real worker and its result
    # comes back through the TLS result backend.
    app = create_app(s)
    res = app.signature("mesh.probe.record", args=({"run_id": "tls-1"}, {"k": "v"})).apply_async()
    assert res.get(timeout=90) == {"ok": True, "run_id": "tls-1"}
    assert client.llen(keys.ns("probe", "runs")) == 1
    # Nothing was refused by the ACL along the way (the default user reads the ACL log).
    admin = secure_redis.server.admin_client(decode_responses=True)
    denied = [(e["reason"], e["object"]) for e in admin.acl_log()
              if e["username"] == secure_redis.tenants[0].user]
    assert denied == [], denied
    assert worker.alive()
    assert "rediss://" in worker.output()  # it really talked TLS


def test_plain_tcp_and_an_unknown_ca_are_refused(secure_redis: SecureRedis, tmp_path: Path) -> None:
    t = secure_redis.tenants[0]
    good = secure_redis.settings(t, tmp_path)
    # Given a redis:// (no TLS) URL to the TLS port: a clear transient error, no hang.
    plain = MeshSettings.load({**good.to_env(), "MESH_REDIS_URL":
                               good.redis.url.get_secret_value().replace("rediss://", "redis://")})
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="Redis"):
        check_connection(plain.redis)
    # Given a CA that did not sign the server's certificate: refused, the cert is verified.
    other = make_ca_and_server_cert(tmp_path / "other-ca")
    wrong_ca = MeshSettings.load({**good.to_env(), "MESH_REDIS_TLS_CA_FILE": str(other.ca_cert)})
    with pytest.raises(BrokerUnavailable, match="certificate verify failed"):
        check_connection(wrong_ca.redis)
    assert time.monotonic() - t0 < 60  # bounded by the socket timeouts, not forever


@pytest.mark.parametrize("user_kind", ["wrong password", "unknown user"])
def test_wrong_credentials_fail_fast_with_a_clear_message(
        secure_redis: SecureRedis, tmp_path: Path, user_kind: str) -> None:
    t = secure_redis.tenants[0]
    bad_secret = "not-the-password-3141592653"
    bad = secure_redis.settings(t, tmp_path, password=bad_secret)
    if user_kind == "unknown user":
        bad = MeshSettings.load({**bad.to_env(), "MESH_REDIS_URL": secure_redis.server.url_for(
            "nobody", bad_secret)})
    pub = Publisher(make_client(bad.redis), bad.streams, Keys(bad.redis.key_prefix))
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        pub.publish(_activity(1))
    with pytest.raises(ConfigError) as info2:
        check_connection(bad.redis, "worker")
    assert time.monotonic() - t0 < 30  # no reconnect loop on a credentials error
    for msg in (str(info.value), str(info2.value)):
        assert "refused the credentials" in msg
        assert bad_secret not in msg and t.password not in msg
    assert str(info2.value).startswith("worker:")


def test_acl_user_cannot_leave_its_prefix(secure_redis: SecureRedis, tmp_path: Path) -> None:
    a, b = secure_redis.tenants
    client = make_client(secure_redis.settings(a, tmp_path).redis)
    client.set(f"{a.prefix}:x", "1")
    client.xadd(Keys(a.prefix).stream(0), {"f": "v"})
    for forbidden in (lambda: client.get(f"{b.prefix}:x"),
                      lambda: client.xadd(Keys(b.prefix).stream(0), {"f": "v"}),
                      lambda: client.set("unprefixed", "1"),
                      lambda: client.keys("*"),
                      lambda: client.flushall(),
                      lambda: client.config_get("requirepass"),
                      lambda: client.publish(f"{b.prefix}:celery:chan", "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()
    # At the boundary a missing permission is a ConfigError that says what is wrong.
    with pytest.raises(ConfigError, match="lacks a permission"), translate_errors("read"):
        client.get(f"{b.prefix}:x")


def test_two_meshes_on_one_redis_do_not_see_each_other(
        redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Namespacing by prefix alone (one Redis user for both): A's worker never takes B's
    tasks, neither sees the other's streams or results, and every key either mesh wrote
    is under its own prefix."""
    admin = redis.Redis(host="127.0.0.1", port=redis_server.port)
    admin.flushall()
    meshes = []
    for name in ("na", "nb"):
        s = MeshSettings.load({"MESH_REDIS_URL": redis_server.url, "MESH_REDIS_KEY_PREFIX": name + "mesh",
                               "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]',
                               "MESH_ARTIFACTS_LOCAL_DIR": str(tmp_path / name)})
        meshes.append((s, start(f"worker-{name}", ["worker", "-Q", "cpu", "-c", "1"], s,
                                tmp_path / "logs")))
    try:
        (sa, _), (sb, _) = meshes
        ka, kb = Keys(sa.redis.key_prefix), Keys(sb.redis.key_prefix)
        ca, cb = make_client(sa.redis), make_client(sb.redis)
        Publisher(ca, sa.streams, ka).publish_many([_activity(i) for i in range(5)])
        app_a, app_b = create_app(sa), create_app(sb)
        ra = [app_a.signature("mesh.probe.record", args=({"run_id": f"a{i}"}, {})).apply_async()
              for i in range(4)]
        rb = app_b.signature("mesh.probe.record", args=({"run_id": "b0"}, {})).apply_async()
        assert [r.get(timeout=90)["run_id"] for r in ra] == ["a0", "a1", "a2", "a3"]
        assert rb.get(timeout=90)["run_id"] == "b0"
        assert ca.llen(ka.ns("probe", "runs")) == 4 and cb.llen(kb.ns("probe", "runs")) == 1
        assert cb.xlen(kb.stream(0)) == 0 and ca.xlen(ka.stream(0)) == 5
        # B's backend cannot see A's results: same task id, other namespace.
        assert app_b.AsyncResult(ra[0].id).state == "PENDING"
        stray = [k for k in admin.keys("*")
                 if not k.decode().startswith(("namesh:", "{namesh:", "nbmesh:", "{nbmesh:"))]
        assert stray == [], stray
    finally:
        for _, w in meshes:
            w.stop()


def test_worker_logs_carry_no_secret(secure_redis: SecureRedis,
                                     tenant_a_worker: tuple[MeshSettings, Proc]) -> None:
    _s, w = tenant_a_worker
    wait_for(lambda: "ready" in w.output(), timeout_s=60, what="worker ready")
    log = w.output()
    for secret in (secure_redis.tenants[0].password, secure_redis.admin_password):
        assert secret not in log


@pytest.mark.parametrize("args", [["worker", "-Q", "cpu", "-c", "1"], ["dispatcher"]],
                         ids=["worker", "dispatcher"])
def test_process_with_wrong_password_exits_at_once_with_the_reason(
        secure_redis: SecureRedis, tmp_path: Path, args: list[str]) -> None:
    """Celery (and a reconnect loop) alone would retry a refused password forever;
    ``mesh worker`` and ``mesh dispatcher`` check the credentials first and exit 3 with
    the reason (and no secret). Every other process and command: test_fail_fast.py."""
    t = secure_redis.tenants[0]
    bad_secret = "wrong-" + t.password[::-1]
    s = secure_redis.settings(t, tmp_path, password=bad_secret)
    w = start(f"{args[0]}-bad", args, s, tmp_path / "logs")
    try:
        w.popen.wait(60)
    finally:
        w.stop()
    out = w.output()
    assert w.popen.returncode == 3, out[-2000:]
    assert "Redis refused the credentials" in out
    assert bad_secret not in out and t.password not in out
