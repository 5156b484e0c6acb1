"""The autoscaling policy, a pure function: every rule, one test or more each."""

from __future__ import annotations

import pytest

from worker_mesh.gpu_pool.policy import Decision, Observation, PolicyConfig, PolicyState, desired_workers

CFG = PolicyConfig(target_per_worker=10, min_workers=0, max_workers=5, idle_to_zero_s=300,
                   prewarm_s=600, prewarm_workers=2, cooldown_s=120)


def decide(state: PolicyState = PolicyState(), cfg: PolicyConfig = CFG, **kw: object) -> Decision:
    kw.setdefault("now", 1000.0)
    kw.setdefault("current", 0)
    return desired_workers(Observation(**kw), cfg, state)  # type: ignore[arg-type]


def test_idle_with_no_history_scales_to_zero() -> None:
    d = decide(current=3)
    assert d.desired == 0 and "idle" in d.reason


def test_queue_depth_over_target() -> None:
    assert decide(queued=1).desired == 1
    assert decide(queued=10).desired == 1
    assert decide(queued=11).desired == 2
    assert decide(queued=35).desired == 4


def test_reserved_work_counts_even_when_lists_are_empty() -> None:
    # acks_late + prefetch: the list is empty, the work is in the unacked hash.
    d = decide(current=2, queued=0, reserved=15)
    assert d.desired == 2
    assert decide(current=0, queued=0, reserved=1).desired == 1


def test_clamped_to_max() -> None:
    d = decide(queued=1000)
    assert d.desired == 5 and "clamped" in d.reason


def test_min_workers_floor_even_when_idle() -> None:
    cfg = PolicyConfig(target_per_worker=10, min_workers=1, max_workers=5)
    assert decide(cfg=cfg, current=0).desired == 1
    assert decide(cfg=cfg, current=4, queued=3).desired == 1


def test_idle_holds_until_idle_to_zero_then_zero() -> None:
    s = decide(now=1000, current=2, queued=15).state
    d = decide(s, now=1100, current=2)
    assert d.desired == 2 and "hold" in d.reason
    d = decide(s, now=1000 + 301, current=2)
    assert d.desired == 0


def test_prewarm_before_window_with_held_work() -> None:
    d = decide(held=500, seconds_until_window=300)
    assert d.desired == 2 and "pre-warm" in d.reason


def test_no_prewarm_without_held_work_or_far_from_window() -> None:
    assert decide(held=0, seconds_until_window=60).desired == 0
    assert decide(held=100, seconds_until_window=3600).desired == 0
    assert decide(held=100, seconds_until_window=None).desired == 0


def test_prewarm_during_open_window_until_released() -> None:
    assert decide(held=5, seconds_until_window=0).desired == 2


def test_prewarm_does_not_lower_a_larger_need() -> None:
    assert decide(held=5, seconds_until_window=10, queued=45).desired == 5


def test_scale_up_is_immediate_even_in_cooldown() -> None:
    s = PolicyState(last_change_at=990)
    assert decide(s, now=1000, current=1, queued=30).desired == 3


def test_scale_down_waits_for_cooldown() -> None:
    s = PolicyState(last_busy_at=1000, last_change_at=950)
    d = decide(s, now=1000, current=4, queued=5)
    assert d.desired == 4 and "cooldown" in d.reason
    d = decide(s, now=1071, current=4, queued=5)
    assert d.desired == 1 and d.state.last_change_at == 1071


def test_never_below_busy_workers() -> None:
    d = decide(current=3, queued=0, reserved=2, busy_workers=2)
    assert d.desired == 2
    d = decide(current=3, busy_workers=3)  # tasks in progress, nothing counted
    assert d.desired == 3 and "busy" in d.reason


def test_busy_floor_never_exceeds_current() -> None:
    assert decide(current=1, busy_workers=4).desired == 1


def test_steady_when_nothing_changes() -> None:
    d = decide(current=2, queued=20)
    assert d.desired == 2 and d.reason.startswith("steady")
    assert d.state.last_change_at is None


def test_change_records_time_and_busy() -> None:
    d = decide(now=42, current=0, queued=1)
    assert d.state == PolicyState(last_busy_at=42, last_change_at=42)


def test_negative_inputs_are_treated_as_zero() -> None:
    assert decide(current=0, queued=-5, reserved=-1).desired == 0


@pytest.mark.parametrize("kw", [dict(target_per_worker=0), dict(min_workers=3, max_workers=2)])
def test_bad_config_rejected(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PolicyConfig(**kw)


def test_from_settings_reads_the_gpu_group() -> None:
    from worker_mesh.mesh.settings import MeshSettings

    gpu = MeshSettings.load({"MESH_GPU_TARGET_PER_WORKER": "7", "MESH_GPU_MAX_WORKERS": "9"}).gpu
    cfg = PolicyConfig.from_settings(gpu)
    assert cfg.target_per_worker == 7 and cfg.max_workers == 9
