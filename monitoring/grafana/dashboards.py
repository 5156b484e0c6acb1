"""The Grafana dashboards, built from one compact description per board.

``python -m monitoring.grafana.dashboards`` rewrites ``monitoring/grafana/dashboards/*.json``;
a test checks that the committed JSON is what this module builds, and runs every
panel's query against a real Prometheus scraping a running mesh.

Boards: *Mesh overview* (events in, workflows out, failures, lag, freshness), *Mesh
workflow* (drill-down, ``$workflow`` variable), *Mesh GPU pool* (batches, backlog,
replicas, GPU-seconds, off-peak windows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Q:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Q, ...]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": c, "value": v} for v, c in p.thresholds]
    out: dict[str, Any] = {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description,
        "datasource": DS, "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "fieldConfig": {"defaults": {"unit": p.unit,
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": q.expr,
                     "legendFormat": q.legend, "range": True}
                    for i, q in enumerate(p.queries)],
    }
    if p.kind in ("stat", "table"):
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "background", "graphMode": "none", "textMode": "auto"}
        for t in out["targets"]:
            t["instant"], t["range"] = True, False
            if p.kind == "table":
                t["format"] = "table"
    return out


def build(board: Board) -> dict[str, Any]:
    panels, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(board.panels, start=1):
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(_panel(p, i, x, y))
        x += p.width
        row_h = max(row_h, p.height)
    ds_var = {"name": "datasource", "type": "datasource", "query": "prometheus",
              "label": "Prometheus", "current": {}, "hide": 0, "refresh": 1}
    return {
        "uid": board.uid, "title": board.title, "description": board.description,
        "tags": ["worker-mesh"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": True, "graphTooltip": 1, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [ds_var, *board.variables]},
        "annotations": {"list": []},
        "links": [{"title": "Worker Mesh", "type": "dashboards", "tags": ["worker-mesh"],
                   "asDropdown": True}],
        "panels": panels,
    }


LATENCY = "sum by (le) (rate(mesh_dispatch_latency_seconds_bucket[5m]))"
FRESH_AGE = "time() - max by (workflow) (mesh_workflow_last_success_timestamp_seconds)"

OVERVIEW = Board(
    "mesh-overview", "Mesh overview",
    "Events in, workflows out, failures, lag and the freshness of every workflow.",
    (
        Panel("Workflows out of SLA", (Q(
            f"count(({FRESH_AGE}) > on (workflow) max by (workflow) (mesh_workflow_sla_seconds))"
            " or vector(0)"),), kind="stat", width=4, height=4, thresholds=((1, "red"),),
            description="Workflows whose last success is older than their freshness SLA."),
        Panel("Dispatchers alive", (Q("max(mesh_dispatchers_alive)"),), kind="stat", width=4,
              height=4, thresholds=()),
        Panel("Dead letters", (Q("max(mesh_dlq_length)"),), kind="stat", width=4, height=4,
              thresholds=((1, "orange"),)),
        Panel("Workers alive per queue", (Q("max by (queue) (mesh_workers_alive)", "{{queue}}"),),
              kind="stat", width=12, height=4),
        Panel("Events published /s", (
            Q("sum by (partition) (rate(mesh_stream_entries_added_total[5m]))", "partition {{partition}}"),
        ), unit="ops"),
        Panel("Event outcomes /s", (
            Q("sum by (outcome) (rate(mesh_stream_outcomes_total[5m]))", "{{outcome}}"),
            Q("sum by (type, outcome) (rate(mesh_events_outcome_total[5m]))", "{{type}} {{outcome}}"),
        ), unit="ops"),
        Panel("Workflow runs /s", (
            Q("sum by (workflow, outcome) (rate(mesh_workflow_runs_total[5m]))",
              "{{workflow}} {{outcome}}"),), unit="ops"),
        Panel("Time since last success vs SLA", (
            Q(FRESH_AGE, "{{workflow}}"),
            Q("max by (workflow) (mesh_workflow_sla_seconds)", "{{workflow}} SLA"),
        ), unit="s"),
        Panel("Task failures (1h)", (
            Q("sum by (task, error) (increase(mesh_task_failures_total[1h]))", "{{task}} {{error}}"),
        )),
        Panel("Dead-lettered by reason (1h)", (
            Q("sum by (reason) (increase(mesh_events_dead_lettered_total[1h]))", "{{reason}}"),
            Q("max(mesh_dlq_length)", "DLQ length"),
        )),
        Panel("Consumer lag and pending", (
            Q("sum by (partition) (mesh_consumer_lag)", "lag p{{partition}}"),
            Q("sum by (partition) (mesh_consumer_pending)", "pending p{{partition}}"),
        )),
        Panel("Dispatch latency (publish -> start)", (
            Q(f"histogram_quantile(0.5, {LATENCY})", "p50"),
            Q(f"histogram_quantile(0.95, {LATENCY})", "p95"),
        ), unit="s"),
        Panel("Queue depth and reserved tasks", (
            Q("sum by (queue) (mesh_queue_length)", "{{queue}} queued"),
            Q("sum by (queue) (mesh_queue_reserved_tasks)", "{{queue}} reserved"),
            Q("sum by (queue) (mesh_tasks_running)", "{{queue}} running"),
        )),
        Panel("Oldest stored result", (
            Q("time() - max by (kind) (mesh_result_oldest_timestamp_seconds)", "{{kind}}"),
        ), unit="s", description="Staleness of the least recently refreshed result per kind."),
        Panel("Flow control: waiting for budget", (
            Q("histogram_quantile(0.95, sum by (le, kind, name) "
              "(rate(mesh_ratelimit_wait_seconds_bucket[5m])))", "{{name}} p95 wait"),
            Q("max by (kind, name) (mesh_ratelimit_oldest_wait_seconds)", "{{name}} oldest waiting"),
            Q("max by (kind, name) (mesh_ratelimit_wait_sla_seconds)", "{{name}} SLA"),
        ), unit="s", description="How long steps wait for a rate limit or concurrency slot "
                                 "(admitted: p95; still waiting: the oldest) against the SLA "
                                 "(alert MeshFlowWaitOverSla)."),
        Panel("Flow control: budget use, waiting and throttled steps", (
            Q("max by (name) (mesh_ratelimit_window_requests / mesh_ratelimit_limit_requests)",
              "{{name}} requests used"),
            Q("max by (name) (mesh_ratelimit_window_tokens / mesh_ratelimit_limit_tokens)",
              "{{name}} tokens used"),
            Q("sum by (kind, name) (mesh_ratelimit_waiting_steps)", "{{name}} waiting"),
            Q("sum by (name) (rate(mesh_ratelimit_throttled_total[5m]))", "{{name}} throttled /s"),
            Q("sum by (resource) (increase(mesh_ratelimit_paused_total[5m]))",
              "{{resource}} 429 pauses (5m)"),
        ), description="Share of each limit's window in use (1 = full), steps waiting now, "
                       "reschedules per second and 429s that paused the resource."),
    ),
)

WF = '{workflow="$workflow"}'
WORKFLOW = Board(
    "mesh-workflow", "Mesh workflow",
    "One workflow: runs, failures, freshness against its SLA, its tasks.",
    (
        Panel("Time since last success", (
            Q(f"time() - max(mesh_workflow_last_success_timestamp_seconds{WF})", "age"),
            Q(f"max(mesh_workflow_sla_seconds{WF})", "SLA"),
        ), unit="s", width=12),
        Panel("Failure ratio (1h)", (Q(
            f'sum(increase(mesh_workflow_finished_total{{workflow="$workflow",outcome="failed"}}[1h]))'
            f" / clamp_min(sum(increase(mesh_workflow_finished_total{WF}[1h])), 1)"),),
            kind="stat", unit="percentunit", width=6, thresholds=((0.1, "red"),)),
        Panel("Retries (total)", (Q(f"sum(mesh_workflow_task_retries_total{WF})"),), kind="stat",
              width=6),
        Panel("Runs by outcome /s", (
            Q(f"sum by (outcome) (rate(mesh_workflow_runs_total{WF}[5m]))", "{{outcome}}"),
        ), unit="ops"),
        Panel("Recorded run ends (1h)", (
            Q(f"sum by (outcome) (increase(mesh_workflow_finished_total{WF}[1h]))", "{{outcome}}"),
        )),
        Panel("Task duration p95", (Q(
            f"histogram_quantile(0.95, sum by (le, task) (rate(mesh_task_duration_seconds_bucket{WF}[5m])))",
            "{{task}}"),), unit="s"),
        Panel("Task executions by outcome (1h)", (
            Q(f"sum by (task, outcome) (increase(mesh_task_runs_total{WF}[1h]))",
              "{{task}} {{outcome}}"),)),
    ),
    variables=({
        "name": "workflow", "label": "Workflow", "type": "query", "datasource": DS,
        "query": {"query": "label_values(mesh_workflow_sla_seconds, workflow)", "refId": "wf"},
        "definition": "label_values(mesh_workflow_sla_seconds, workflow)",
        "refresh": 2, "sort": 1, "multi": False, "includeAll": False, "current": {}, "hide": 0,
    },),
)

GPU = Board(
    "mesh-gpu", "Mesh GPU pool",
    "Micro-batches, bulk backlog and off-peak windows, replicas, GPU-seconds, models in use.",
    (
        Panel("Off-peak window open", (Q("max(mesh_gpu_offpeak_open)"),), kind="stat", width=6,
              height=4),
        Panel("Next window in", (Q("max(mesh_gpu_offpeak_next_start_timestamp_seconds) - time()"),),
              kind="stat", unit="s", width=6, height=4),
        Panel("Held bulk items", (Q("sum(mesh_gpu_held_items)"),), kind="stat", width=6, height=4),
        Panel("GPU workers", (Q('max by (queue) (mesh_workers_alive{queue=~"gpu|gpu-batch"})',
                                "{{queue}}"),), kind="stat", width=6, height=4),
        Panel("Batch size", (
            Q("histogram_quantile(0.5, sum by (le, task_type) (rate(mesh_gpu_batch_size_bucket[5m])))",
              "{{task_type}} p50"),
            Q("histogram_quantile(0.95, sum by (le, task_type) (rate(mesh_gpu_batch_size_bucket[5m])))",
              "{{task_type}} p95"),
        )),
        Panel("Batch wait", (
            Q("histogram_quantile(0.95, sum by (le, task_type) "
              "(rate(mesh_gpu_batch_wait_seconds_bucket[5m])))", "{{task_type}} p95"),), unit="s"),
        Panel("GPU backlog", (
            Q("sum by (queue) (mesh_gpu_held_items)", "{{queue}} held"),
            Q('sum by (queue) (mesh_queue_length{queue=~"gpu|gpu-batch"})', "{{queue}} queued"),
            Q('sum by (queue) (mesh_queue_reserved_tasks{queue=~"gpu|gpu-batch"})', "{{queue}} reserved"),
        )),
        Panel("Replicas and processes", (
            Q('max by (queue) (mesh_workers_alive{queue=~"gpu|gpu-batch"})', "{{queue}} workers"),
            Q('max by (queue) (mesh_worker_processes{queue=~"gpu|gpu-batch"})', "{{queue}} processes"),
        )),
        Panel("GPU-seconds /s", (
            Q("sum by (task_type) (rate(mesh_gpu_seconds_total[5m]))", "{{task_type}}"),
            Q("sum by (period, mode) (rate(mesh_gpu_recorded_seconds_total[5m]))",
              "recorded {{period}} {{mode}}"),
        ), unit="s", description="Live from the workers, and as accounted by the GPU pool "
                                 "(peak/off-peak, deferred/direct)."),
        Panel("Off-peak windows", (
            Q("max(mesh_gpu_offpeak_open)", "open"),
            Q("sum by (why) (increase(mesh_gpu_released_total[1h]))", "released ({{why}})"),
        )),
        Panel("Models in use", (Q("max by (model, version) (mesh_model_info) == 1"),), kind="table",
              width=24, height=6),
    ),
)

BOARDS = (OVERVIEW, WORKFLOW, GPU)


def files() -> dict[str, dict[str, Any]]:
    return {f"{b.uid}.json": build(b) for b in BOARDS}


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in files().items():
        path = out / name
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write():
        print(p)
