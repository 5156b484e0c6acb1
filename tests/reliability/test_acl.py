"""The recommended ACL users (mesh.acl), probed against a real redis-server with ACLs.

Given a redis-server whose ``default`` user has a password and that holds the mesh user
and the producer user of prefix ``acl``, plus another application's keys, scripts and
functions, when each user tries what it must not do, then Redis refuses it (NOPERM),
and what the mesh needs (its keys, EVAL/EVALSHA/SCRIPT LOAD on them, SELECT of its own
database; the producer's publish and publish_many) still works.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from worker_mesh.events import CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.acl import acl_rule, producer_acl_rule
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration

PREFIX = "acl"
OTHER = "shop"  # another application on the same Redis
LIB = "#!lua name=otherlib\nredis.register_function('f', function() return 1 end)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis, str, str]]:
    mesh_pw, prod_pw = "m-" + secrets.token_hex(10), "p-" + secrets.token_hex(10)
    srv = EmbeddedRedis(tmp_path_factory.mktemp("acl"), password="adm-" + secrets.token_hex(10),
                        acl_users=[acl_rule("mesh", mesh_pw, PREFIX),
                                   producer_acl_rule("producer", prod_pw, PREFIX)])
    srv.start()
    admin = srv.admin_client()
    admin.set(f"{OTHER}:secret-key-name", "1")
    admin.execute_command("SELECT", 1)
    admin.set(f"{PREFIX}:in-db-1", "1")
    admin.execute_command("SELECT", 0)
    admin.execute_command("FUNCTION", "LOAD", LIB)
    admin.close()
    yield srv, mesh_pw, prod_pw
    srv.stop()


def _settings(srv: EmbeddedRedis, user: str, pw: str, tmp_path: Path) -> MeshSettings:
    return MeshSettings.load({"MESH_REDIS_URL": srv.url_for(user, pw), "MESH_REDIS_KEY_PREFIX": PREFIX,
                              "MESH_ARTIFACTS_LOCAL_DIR": str(tmp_path)})


def _refused(probes: dict[str, Callable[[], Any]]) -> dict[str, str]:
    """The probes that were NOT refused with NOPERM (with what they returned)."""
    allowed = {}
    for name, fn in probes.items():
        try:
            allowed[name] = repr(fn())[:80]
        except redis.exceptions.NoPermissionError:
            continue
    return allowed


def test_mesh_user_stays_in_its_prefix_database_and_scripts(
        server: tuple[EmbeddedRedis, str, str], tmp_path: Path) -> None:
    srv, mesh_pw, _ = server
    c = make_client(_settings(srv, "mesh", mesh_pw, tmp_path).redis)
    # What the mesh needs works: its keys, Lua on its keys, its own database.
    c.set(f"{PREFIX}:k", "v")
    sha = c.script_load("return redis.call('GET', KEYS[1])")
    assert c.evalsha(sha, 1, f"{PREFIX}:k") == b"v"
    assert c.eval("return redis.call('INCR', KEYS[1])", 1, f"{{{PREFIX}:p0}}:n") == 1
    assert c.execute_command("SELECT", 0)
    # What would reach beyond them is refused.
    not_refused = _refused({
        "SELECT 1": lambda: c.execute_command("SELECT", 1),
        "SCAN": lambda: c.scan(0),
        "SCAN MATCH other": lambda: c.scan(0, match=f"{OTHER}:*"),
        "RANDOMKEY": c.randomkey,
        "DBSIZE": c.dbsize,
        "KEYS": lambda: c.keys("*"),
        "MOVE to db 1": lambda: c.move(f"{PREFIX}:k", 1),
        "COPY to db 1": lambda: c.execute_command("COPY", f"{PREFIX}:k", f"{PREFIX}:k2", "DB", 1),
        "SWAPDB": lambda: c.execute_command("SWAPDB", 0, 1),
        "SCRIPT FLUSH": c.script_flush,
        "SCRIPT KILL": c.script_kill,
        "FUNCTION FLUSH": lambda: c.execute_command("FUNCTION", "FLUSH"),
        "FUNCTION DELETE": lambda: c.execute_command("FUNCTION", "DELETE", "otherlib"),
        "FUNCTION LOAD": lambda: c.execute_command("FUNCTION", "LOAD", "REPLACE", LIB),
        "FUNCTION LIST": lambda: c.execute_command("FUNCTION", "LIST"),
        "FCALL": lambda: c.execute_command("FCALL", "f", 0),
        "PUBSUB CHANNELS": lambda: c.execute_command("PUBSUB", "CHANNELS"),
        "PUBSUB NUMPAT": lambda: c.execute_command("PUBSUB", "NUMPAT"),
        "GET other": lambda: c.get(f"{OTHER}:secret-key-name"),
        "EVAL other key": lambda: c.eval("return redis.call('GET', KEYS[1])", 1,
                                         f"{OTHER}:secret-key-name"),
        "FLUSHALL": c.flushall,
        "FLUSHDB": c.flushdb,
        "CONFIG GET": lambda: c.config_get("*"),
        "INFO": c.info,
        "ACL LIST": c.acl_list,
        "CLIENT LIST": c.client_list,
    })
    assert not_refused == {}
    # Nothing of the other application was touched.
    admin = srv.admin_client()
    assert admin.get(f"{OTHER}:secret-key-name") == b"1"
    assert admin.execute_command("FUNCTION", "LIST")  # the other library is still there


def test_producer_can_only_publish_events(server: tuple[EmbeddedRedis, str, str],
                                          tmp_path: Path) -> None:
    srv, _, prod_pw = server
    s = _settings(srv, "producer", prod_pw, tmp_path)
    keys = Keys(PREFIX)
    c = make_client(s.redis)
    # The real publisher works as the producer (XADD only, pipelined or not).
    pub = Publisher(c, s.streams, keys)
    pub.publish(CustomerActivity(customer_id="1", logins_30d=1, active_days_30d=1))
    pub.publish_many([CustomerActivity(customer_id=str(i), logins_30d=i, active_days_30d=1)
                      for i in range(5)])
    assert srv.admin_client().xlen(keys.stream(0)) == 6
    assert c.ping()
    not_refused = _refused({
        "XRANGE own stream": lambda: c.xrange(keys.stream(0)),
        "XREADGROUP": lambda: c.xreadgroup("g", "c", {keys.stream(0): ">"}),
        "XADD dead-letter stream": lambda: c.xadd(keys.dlq, {"f": "v"}),
        "XADD other prefix": lambda: c.xadd(Keys(OTHER).stream(0), {"f": "v"}),
        "XDEL": lambda: c.xdel(keys.stream(0), "0-1"),
        "XTRIM": lambda: c.xtrim(keys.stream(0), maxlen=0),
        "DEL": lambda: c.delete(keys.stream(0)),
        "GET": lambda: c.get(f"{PREFIX}:k"),
        "SET": lambda: c.set(f"{PREFIX}:k", "x"),
        "PUBLISH": lambda: c.publish(f"{PREFIX}:celery:x", "y"),
        "SUBSCRIBE": lambda: c.execute_command("SUBSCRIBE", f"{PREFIX}:x"),
        "EVAL": lambda: c.eval("return 1", 0),
        "SCAN": lambda: c.scan(0),
        "SELECT 1": lambda: c.execute_command("SELECT", 1),
        "SCRIPT FLUSH": c.script_flush,
        "FUNCTION FLUSH": lambda: c.execute_command("FUNCTION", "FLUSH"),
    })
    assert not_refused == {}


def test_readme_redis_cli_example_works_as_the_producer(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A producer in any language: README's ``redis-cli XADD`` under the producer user."""
    from tests.test_readme_wire_example import _example

    pw = "p-" + secrets.token_hex(10)
    with EmbeddedRedis(tmp_path_factory.mktemp("acl-cli"), password="adm-" + secrets.token_hex(8),
                       acl_users=[producer_acl_rule("producer", pw, "mesh")]) as srv:
        subprocess.run(["bash", "-c", _example().replace("redis-cli", "redis-cli --user producer", 1)],
                       check=True, capture_output=True,
                       env={"PORT": str(srv.port), "PATH": "/usr/bin:/bin", "REDISCLI_AUTH": pw})
        assert srv.admin_client().xlen("{mesh:p0}:events") == 1
