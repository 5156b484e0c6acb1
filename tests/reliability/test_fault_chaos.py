"""One run of the Redis chaos scenario (``tests/reliability/chaos.py``): two SIGTERM
restarts and a 5 s SIGSTOP of redis-server while events are published at 100/s. Every
acknowledged event has its effect; the streams and the run ledger settle, every run
succeeded. ``python -m benchmarks.bench_chaos`` runs it several times in a row."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.chaos import run_chaos
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.settings import MeshSettings

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.slow]


def test_redis_restarts_and_a_freeze_lose_no_run(settings: MeshSettings, redis_server: EmbeddedRedis,
                                                 tmp_path: Path) -> None:
    result = run_chaos(settings, redis_server, tmp_path, rate=100, seconds=20)
    assert result.accepted >= 1000, result
    assert result.ok, result.as_dict()
