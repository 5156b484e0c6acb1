"""Task kinds: retry policies computed right, and applied by a real worker."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.exceptions import TimeoutError as CeleryTimeout

from tests.support.procs import Proc, start
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.kinds import API_CALL, CRITICAL, INFERENCE, TRAINING


def test_retry_after_hint_wins_but_is_capped() -> None:
    assert API_CALL.delay_s(0, hint_s=7.0) == 7.0
    assert API_CALL.delay_s(0, hint_s=3600.0) == API_CALL.backoff_max_s


def test_backoff_grows_exponentially_within_bounds() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(API_CALL.backoff_max_s, API_CALL.backoff_s * 2**attempt)
        for _ in range(50):
            d = API_CALL.delay_s(attempt, rng=rng)
            assert API_CALL.backoff_s / 2 <= d <= ceiling


def test_kinds_differ_as_documented() -> None:
    assert CRITICAL.max_retries == 0 and CRITICAL.report_at_once
    assert TRAINING.backoff_s >= 60 > INFERENCE.backoff_max_s
    assert INFERENCE.max_retries < API_CALL.max_retries


@pytest.fixture
def retry_mesh(settings: MeshSettings, tmp_path: Path) -> Iterator[tuple[MeshSettings, Proc]]:
    s = MeshSettings.load({**settings.to_env(),
                           "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_retry"]'})
    w = start("worker", ["worker", "-Q", "cpu", "-c", "1"], s, tmp_path / "logs")
    yield s, w
    w.stop()


@pytest.mark.e2e
def test_rate_limited_task_retries_after_the_hint(retry_mesh: tuple[MeshSettings, Proc],
                                                   r: redis.Redis) -> None:
    s, _ = retry_mesh
    app = create_app(s)
    res = app.signature("mesh.probe.flaky", args=("flaky", 2, 0.5)).apply_async()
    assert res.get(timeout=90) == 3
    times = [float(t) for t in r.lrange("flaky:times", 0, -1)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 3
    assert all(g >= 0.45 for g in gaps), gaps  # Retry-After honoured, not retried at once


@pytest.mark.e2e
def test_permanent_error_fails_fast_without_retry(retry_mesh: tuple[MeshSettings, Proc],
                                                  r: redis.Redis) -> None:
    s, _ = retry_mesh
    app = create_app(s)
    res = app.signature("mesh.probe.missing", args=("missing",)).apply_async()
    with pytest.raises(Exception, match="does not exist") as info:
        res.get(timeout=90)
    assert not isinstance(info.value, CeleryTimeout)
    assert int(r.get("missing")) == 1


@pytest.mark.e2e
def test_critical_task_is_never_retried(retry_mesh: tuple[MeshSettings, Proc], r: redis.Redis) -> None:
    s, _ = retry_mesh
    app = create_app(s)
    res = app.signature("mesh.probe.critical", args=("crit",)).apply_async()
    with pytest.raises(Exception, match="critical step broke"):
        res.get(timeout=90)
    assert int(r.get("crit")) == 1


def test_time_limits_follow_the_kind_and_an_explicit_option_wins() -> None:
    from worker_mesh.mesh.settings import MeshSettings as _S

    s = _S.load({"MESH_REDIS_URL": "redis://127.0.0.1:1/0"})
    app = create_app(s)
    embed = app.tasks["mesh.embedding.embed"]
    assert (embed.time_limit, embed.soft_time_limit) == (600, 570)
    # training, and the whole-corpus re-embedding, keep the global (longest) limit
    assert app.tasks["mesh.retrain.churn"].time_limit == s.celery.task_time_limit_s
    assert app.tasks["mesh.embedding.reembed_all"].time_limit == s.celery.task_time_limit_s
