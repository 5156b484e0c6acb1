"""Fixtures of the reliability suite: a locked-down Redis (TLS only, a password for the
``default`` user, one least-privilege ACL user per mesh) and helpers to build the
settings of a mesh that talks to it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tls import TlsFiles, make_ca_and_server_cert
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.redis_conn import acl_rule
from worker_mesh.mesh.settings import MeshSettings

PROBES = '["tests.support.probe_tasks"]'


@dataclass(frozen=True)
class Tenant:
    """One mesh on the shared Redis: its prefix, ACL user and password."""

    prefix: str
    user: str
    password: str


@dataclass
class SecureRedis:
    server: EmbeddedRedis
    tls: TlsFiles
    admin_password: str
    tenants: list[Tenant]

    def settings(self, tenant: Tenant, tmp_path: Path, *, password: str | None = None,
                 **extra: str) -> MeshSettings:
        url = self.server.url_for(tenant.user, password if password is not None else tenant.password)
        return MeshSettings.load({
            "MESH_REDIS_URL": url,
            "MESH_REDIS_TLS_CA_FILE": str(self.tls.ca_cert),
            "MESH_REDIS_KEY_PREFIX": tenant.prefix,
            "MESH_ARTIFACTS_LOCAL_DIR": str(tmp_path / tenant.prefix / "artifacts"),
            "MESH_DISPATCHER_BLOCK_MS": "50",
            "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
            "MESH_CELERY_EXTRA_MODULES": PROBES,
            "MESH_REDIS_SOCKET_TIMEOUT_S": "3",
            **extra,
        })


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    """TLS-only redis-server with ``requirepass`` and two tenants, each an ACL user that
    can touch only its own prefix."""
    base = tmp_path_factory.mktemp("secure-redis")
    tls = make_ca_and_server_cert(base / "tls")
    tenants = [
        Tenant("ta" + uuid.uuid4().hex[:8], "mesh-a", "pw-a-" + secrets.token_hex(12)),
        Tenant("tb" + uuid.uuid4().hex[:8], "mesh-b", "pw-b-" + secrets.token_hex(12)),
    ]
    admin = "admin-" + secrets.token_hex(12)
    server = EmbeddedRedis(
        base / "data", password=admin,
        acl_users=[acl_rule(t.user, t.password, t.prefix) for t in tenants],
        tls_cert_file=str(tls.server_cert), tls_key_file=str(tls.server_key),
        tls_ca_file=str(tls.ca_cert),
    )
    server.start()
    yield SecureRedis(server, tls, admin, tenants)
    server.stop()
