"""The committed Grafana files: dashboards are what the builder makes (no hand edits
drifting), each has the panels the issue asks for, and the provisioning files point
Grafana at them. (The panel queries themselves run against a real Prometheus in
test_mesh_observability.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from worker_mesh.monitoring.grafana import dashboards

GRAFANA = Path(dashboards.__file__).resolve().parent


def test_committed_dashboards_match_the_builder() -> None:
    built = dashboards.files()
    on_disk = {p.name: json.loads(p.read_text()) for p in dashboards.OUT.glob("*.json")}
    assert set(on_disk) == set(built) == {"mesh-overview.json", "mesh-workflow.json", "mesh-gpu.json"}
    for name, doc in built.items():
        assert on_disk[name] == json.loads(json.dumps(doc)), (
            f"{name} is stale: run python -m monitoring.grafana.dashboards")


def test_boards_cover_what_operators_need() -> None:
    docs = dashboards.files()
    exprs = {name: " ".join(t["expr"] for p in d["panels"] for t in p["targets"])
             for name, d in docs.items()}
    for metric in ("mesh_stream_entries_added_total", "mesh_workflow_runs_total",
                   "mesh_task_failures_total", "mesh_consumer_lag",
                   "mesh_workflow_last_success_timestamp_seconds",
                   "mesh_ratelimit_wait_seconds_bucket", "mesh_ratelimit_oldest_wait_seconds",
                   "mesh_ratelimit_wait_sla_seconds", "mesh_ratelimit_throttled_total",
                   "mesh_ratelimit_window_tokens"):
        assert metric in exprs["mesh-overview.json"], metric
    assert all("$workflow" in t["expr"] for p in docs["mesh-workflow.json"]["panels"]
               for t in p["targets"])
    variables = {v["name"] for v in docs["mesh-workflow.json"]["templating"]["list"]}
    assert {"datasource", "workflow"} <= variables
    for metric in ("mesh_gpu_batch_size_bucket", "mesh_gpu_held_items", "mesh_workers_alive",
                   "mesh_gpu_seconds_total", "mesh_gpu_offpeak_open"):
        assert metric in exprs["mesh-gpu.json"], metric
    for d in docs.values():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in d["panels"])


def test_provisioning_files_are_valid() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "mesh.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mesh.yml").read_text())
    assert prov["providers"][0]["type"] == "file" and prov["providers"][0]["options"]["path"]
