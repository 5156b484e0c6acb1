"""`mesh status`: the whole mesh on one screen (or as JSON), from Redis alone.

Streams and consumer lag, Celery queue depths and reserved tasks, workers alive per
queue (their heartbeats), dead letters, held GPU items and the next off-peak window, and
each workflow's last success against its freshness SLA, and the flow-control limits
(use, waiting steps; ``workers/cli/flow_status.py``). Exits 1 when a workflow is out
of its SLA, so cron jobs and probes can use it; 3 when Redis cannot be read (refused
credentials, untrusted certificate, unreachable); 2 for bad settings.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings
from worker_mesh.workers.cli.flow_status import flow_data, render_flow


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    s = max(now - ts, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit} ago"
    return f"{s:.0f}s ago"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def status_data(snap: Any) -> dict[str, Any]:
    """The JSON form of a snapshot (also what the tables show)."""
    now = snap.taken_at
    workflows = [{
        "workflow": w.name, "sla_s": w.sla_s, "last_success": _iso(w.last_success),
        "age_s": None if w.last_success is None else round(now - w.last_success, 3),
        "within_sla": w.within_sla(now), "successes": w.successes, "failures": w.failures,
        "retries": w.retries} for w in snap.workflows]
    return {
        "taken_at": _iso(now),
        "streams": [{"partition": s.partition, "length": s.length, "published": s.entries_added,
                     "lag": s.lag, "pending": s.pending, "consumers": s.consumers,
                     "consumers_active": s.consumers_active} for s in snap.streams],
        "dispatchers_alive": snap.dispatchers_alive,
        "outcomes": snap.outcomes,
        "dlq": {"length": snap.dlq_length, "added": snap.dlq_added},
        "queues": {q: {"depth": snap.queues.get(q, 0), "reserved": snap.reserved.get(q, 0),
                       "workers_alive": snap.workers.get(q, 0),
                       "processes": snap.worker_processes.get(q, 0)} for q in snap.queues},
        "running_tasks": len(snap.running),
        "gpu": {"held": sum(snap.gpu_held.values()), "offpeak_open": snap.offpeak_open,
                "next_offpeak": _iso(snap.offpeak_next), "offpeak_ends": _iso(snap.offpeak_end)},
        "workflows": workflows,
        "out_of_sla": snap.out_of_sla(),
        "errors": snap.errors,
    }


def render(data: dict[str, Any], now: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="streams", title_justify="left")
    for col in ("partition", "length", "published", "lag", "pending", "dispatchers"):
        t.add_column(col, justify="right")
    for s in data["streams"]:
        t.add_row(str(s["partition"]), str(s["length"]), str(s["published"]), str(s["lag"]),
                  str(s["pending"]), f"{s['consumers_active']}/{s['consumers']}")
    console.print(t)
    q = Table(title="queues", title_justify="left")
    for col in ("queue", "depth", "reserved", "workers alive", "processes"):
        q.add_column(col, justify="right")
    for name, v in data["queues"].items():
        alive = str(v["workers_alive"]) if v["workers_alive"] else "[red]0[/red]"
        q.add_row(name, str(v["depth"]), str(v["reserved"]), alive, str(v["processes"]))
    console.print(q)
    w = Table(title="workflows", title_justify="left")
    for col in ("workflow", "last success", "SLA", "status", "ok", "failed", "retries"):
        w.add_column(col)
    for wf in data["workflows"]:
        last = None if wf["age_s"] is None else now - wf["age_s"]
        state = ("[red]OUT OF SLA[/red]" if not wf["within_sla"] else
                 "[green]fresh[/green]" if wf["age_s"] is not None else "[yellow]no run yet[/yellow]")
        w.add_row(wf["workflow"], _ago(last, now), f"{wf['sla_s']}s", state, str(wf["successes"]),
                  str(wf["failures"]), str(wf["retries"]))
    console.print(w)
    gpu = data["gpu"]
    window = "open" if gpu["offpeak_open"] else f"next {gpu['next_offpeak'] or 'unknown'}"
    dlq = data["dlq"]["length"]
    console.print(f"dead letters: {'[red]' if dlq else ''}{dlq}{'[/red]' if dlq else ''}   "
                  f"held GPU items: {gpu['held']}   off-peak window: {window}   "
                  f"running tasks: {data['running_tasks']}")
    for err in data["errors"]:
        console.print(f"[yellow]note:[/yellow] {err}")
    if data["out_of_sla"]:
        console.print(f"[red]out of SLA:[/red] {', '.join(data['out_of_sla'])}")


@click.command("status")
@json_option
def status_cmd(as_json: bool) -> None:
    """Streams, queues, workers, dead letters, GPU backlog and workflow freshness.
    Exit status 1 when a workflow is out of its freshness SLA, 3 when Redis cannot be
    read, 2 for bad settings."""
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.mesh.redis_conn import make_client, translate_errors
    from worker_mesh.monitoring.snapshot import take

    settings = load_settings()
    registry = load_workflows(settings)
    client = make_client(settings.redis)
    workflows = sorted(registry.workflows.values(), key=lambda w: w.name)
    with translate_errors("mesh status"):  # BrokerUnavailable: exit 3 (workers.cli.main)
        snap = take(client, settings, workflows, now=time.time())
    data = status_data(snap)
    with translate_errors("mesh status (flow control)"):
        data["flow"] = flow_data(client, settings)
    if as_json:
        emit_json(data)
    else:
        render(data, snap.taken_at)
        render_flow(data["flow"])
    if data["out_of_sla"]:
        sys.exit(1)


COMMANDS = [status_cmd]
