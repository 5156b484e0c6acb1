"""Batch policies: declared per step, overridden per step by settings, validated."""

from __future__ import annotations

import pytest

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.batched import BATCHED, BatchPolicy, policy_of
from worker_mesh.workers.runtime import Runtime


def test_the_churn_score_step_is_batched_with_its_declared_policy() -> None:
    import worker_mesh.workers.tasks.churn  # noqa: F401 - declares the step

    step = BATCHED["mesh.churn.score"]
    rt = Runtime(MeshSettings.load({}))
    assert policy_of(rt, step) == step.policy == BatchPolicy(max_items=64, max_wait_ms=10)


def test_settings_override_one_field_of_a_steps_policy() -> None:
    import worker_mesh.workers.tasks.churn  # noqa: F401

    rt = Runtime(MeshSettings.load(
        {"MESH_THROUGHPUT_BATCH": '{"mesh.churn.score": {"max_wait_ms": 2}}'}))
    assert policy_of(rt, BATCHED["mesh.churn.score"]) == BatchPolicy(max_items=64, max_wait_ms=2)


@pytest.mark.parametrize("value, words", [
    ('{"mesh.churn.score": {"max_size": 3}}', "unknown key"),
    ('{"mesh.churn.score": {"max_items": 0}}', "max_items >= 1"),
])
def test_a_bad_override_names_the_setting(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as exc:
        MeshSettings.load({"MESH_THROUGHPUT_BATCH": value})
    assert "throughput" in str(exc.value)


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_items"):
        BatchPolicy(max_items=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchPolicy(max_wait_ms=-1)
