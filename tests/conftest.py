"""Shared fixtures: a real redis-server per test module on a free port, settings that
point at it with a unique key prefix per test, and helpers for real processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.settings import MeshSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for _k in [k for k in os.environ if k.upper().startswith("MESH_")]:
    del os.environ[_k]  # tests never inherit a developer's mesh settings


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server for this test module (tests may stop/restart it)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: EmbeddedRedis, tmp_path: Path) -> MeshSettings:
    """Settings for one test: its own key prefix, so tests never see each other's keys."""
    prefix = "t" + uuid.uuid4().hex[:10]
    return MeshSettings.load(
        {
            "MESH_REDIS_URL": redis_server.url,
            "MESH_REDIS_KEY_PREFIX": prefix,
            "MESH_ARTIFACTS_LOCAL_DIR": str(tmp_path / "artifacts"),
            "MESH_DISPATCHER_BLOCK_MS": "50",
            "MESH_DISPATCHER_CLAIM_IDLE_MS": "1000",
        }
    )


@pytest.fixture
def r(settings: MeshSettings) -> Iterator[redis.Redis]:
    from worker_mesh.mesh.redis_conn import make_client

    client = make_client(settings.redis)
    yield client
    client.close()
