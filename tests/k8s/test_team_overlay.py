"""The example overlay for a team's workflows (k8s/overlays/team-orders): every process
that builds or runs the team's steps (dispatcher, cpu and io workers, beat, exporter)
runs the team's image, the built-in pack is off, and the policy checks pass."""

from __future__ import annotations

from collections.abc import Callable

from tests.k8s.conftest import Objs, find
from worker_mesh.workers.cli._k8s_policy import run_checks

TEAM_IMAGE = "registry.example.com/team-orders/mesh:1.0.0"


def test_the_team_image_runs_every_process_that_needs_its_package(
        overlay_objs: Callable[[str], Objs]) -> None:
    objs = overlay_objs("team-orders")
    for name in ("mesh-dispatcher", "mesh-worker-cpu", "mesh-worker-io", "mesh-beat", "mesh-exporter"):
        [c] = find(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert c["image"] == TEAM_IMAGE, name
    settings = find(objs, "ConfigMap", "mesh-settings")["data"]
    assert settings["MESH_WORKFLOWS_BUILTIN"] == "false"


def test_the_team_overlay_passes_every_policy_check(overlay_objs: Callable[[str], Objs]) -> None:
    results = run_checks(overlay_objs("team-orders"), gpu_pool=True)
    assert all(not problems for problems in results.values()), results
