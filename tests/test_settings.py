"""Settings: one tree, MESH_ prefix, unknown keys rejected, secrets masked."""

from __future__ import annotations

import pytest

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.mesh.settings import MeshSettings


def test_env_names_map_to_groups() -> None:
    s = MeshSettings.load({"MESH_REDIS_URL": "redis://x:1/0", "MESH_DISPATCHER_BATCH_COUNT": "7",
                           "MESH_GPU_OFFPEAK_WINDOWS": '["02:00-03:00 Europe/Berlin"]'})
    assert s.dispatcher.batch_count == 7
    assert s.gpu.offpeak_windows == ["02:00-03:00 Europe/Berlin"]


def test_unknown_key_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="MESH_DISPATCHER_BATCHCOUNT"):
        MeshSettings.load({"MESH_DISPATCHER_BATCHCOUNT": "7"})


def test_invalid_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match="batch_count"):
        MeshSettings.load({"MESH_DISPATCHER_BATCH_COUNT": "lots"})


def test_visibility_timeout_must_exceed_the_longest_task() -> None:
    with pytest.raises(ConfigError, match="visibility_timeout_s"):
        MeshSettings.load({"MESH_CELERY_TASK_TIME_LIMIT_S": "7200"})


def test_secrets_never_in_repr() -> None:
    s = MeshSettings.load({"MESH_REDIS_URL": "redis://:hunter2secret@h:1/0",
                           "MESH_LLM_API_KEY": "sk-hunter2secret"})
    assert "hunter2secret" not in repr(s)
    assert "hunter2secret" not in str(s.model_dump())


def test_to_env_round_trips() -> None:
    s = MeshSettings.load({"MESH_REDIS_URL": "redis://:pw@h:1/0", "MESH_STREAMS_PARTITIONS": "4",
                           "MESH_GPU_OFFPEAK_WINDOWS": '["02:00-03:00 UTC"]'})
    again = MeshSettings.load(s.to_env())
    assert again == s
