"""Run statistics: counted once per run, durations and freshness recorded."""

from __future__ import annotations

import pytest
import redis

from mesh.keys import Keys
from mesh.settings import MeshSettings
from workers.runstats import RunStats


@pytest.mark.integration
def test_a_run_is_counted_once_even_when_redelivered(settings: MeshSettings, r: redis.Redis) -> None:
    stats = RunStats(r, Keys(settings.redis.key_prefix))
    assert stats.finished("churn", "run-1", started_at=100.0, ok=True, now=100.5)
    assert not stats.finished("churn", "run-1", started_at=100.0, ok=True, now=101.0)
    assert stats.finished("churn", "run-2", started_at=100.0, ok=False, now=102.0)
    st = stats.get("churn")
    assert (st.successes, st.failures, st.runs) == (1, 1, 2)
    assert st.p50_s == pytest.approx(0.5)
    assert stats.last_success() == {"churn": pytest.approx(100.5)}


@pytest.mark.integration
def test_percentiles_over_many_runs(settings: MeshSettings, r: redis.Redis) -> None:
    stats = RunStats(r, Keys(settings.redis.key_prefix))
    for i in range(100):
        stats.finished("reembed", f"r{i}", started_at=0.0, ok=True, now=(i + 1) / 100)
    st = stats.get("reembed")
    assert st.p50_s == pytest.approx(0.5, abs=0.02)
    assert st.p95_s == pytest.approx(0.95, abs=0.02)
    assert stats.get("never-ran").p50_s is None
