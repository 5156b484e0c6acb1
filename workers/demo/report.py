"""The demo's summary: per workflow runs, successes, failures, retries, p50/p95
duration; the cross-workflow triggers that fired; every event's outcome."""

from __future__ import annotations

import json
from typing import Any

import redis

from worker_mesh.chains.registry import WorkflowRegistry
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings

# Events that a workflow publishes to trigger another one: (type, payload test, from, to).
CROSS_TRIGGERS = [
    ("churn.high_risk", lambda p: True, "churn", "content"),
    ("content.updated", lambda p: p.get("source") == "generated", "content", "reembed"),
]


def summary(client: redis.Redis, settings: MeshSettings, registry: WorkflowRegistry,
            elapsed_s: float) -> dict[str, Any]:
    keys = Keys(settings.redis.key_prefix)
    stats = RunLedger(client, keys, settings.runs)
    workflows = []
    for wf in registry:
        st = stats.workflow_stats(wf.name)
        workflows.append({
            "workflow": wf.name, "runs": st.runs, "successes": st.successes,
            "failures": st.failures, "retries": st.retries,
            "p50_s": st.p50_s, "p95_s": st.p95_s,
        })
    outcomes: dict[str, int] = {}
    triggers = {f"{src}->{dst} ({typ})": 0 for typ, _, src, dst in CROSS_TRIGGERS}
    for p in range(settings.streams.partitions):
        counts: dict[Any, Any] = client.hgetall(keys.outcomes(p))  # type: ignore[assignment]
        for k, v in counts.items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            if "|" not in name:
                outcomes[name] = outcomes.get(name, 0) + int(v)
        last = "-"
        while True:
            batch: list[Any] = client.xrange(  # type: ignore[assignment]
                keys.stream(p), min=f"({last}" if last != "-" else "-", count=1000)
            if not batch:
                break
            for entry_id, fields in batch:
                typ = fields.get(b"type", b"").decode("utf-8", "replace")
                for ttype, test, src, dst in CROSS_TRIGGERS:
                    if typ == ttype:
                        try:
                            payload = json.loads(fields.get(b"payload", b"{}"))
                        except ValueError:
                            continue
                        if isinstance(payload, dict) and test(payload):
                            triggers[f"{src}->{dst} ({typ})"] += 1
                last = entry_id.decode()
    from datetime import UTC, datetime

    from worker_mesh.gpu_pool.deferral import Deferral
    from worker_mesh.gpu_pool.offpeak import Windows

    held = Deferral(client, keys, settings.gpu, sender=None,  # type: ignore[arg-type]
                    windows=Windows.parse(settings.gpu.offpeak_windows)).held_count()
    nxt = Windows.parse(settings.gpu.offpeak_windows).next_open(datetime.now(UTC))
    return {
        "elapsed_s": round(elapsed_s, 2),
        "gpu_bulk_held": held,
        "next_offpeak_window": nxt.isoformat() if nxt else None,
        "workflows": workflows,
        "event_outcomes": outcomes,
        "events_accounted": sum(outcomes.values()),
        "dead_letters": client.xlen(keys.dlq),
        "cross_workflow_triggers": triggers,
    }


def render(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"Worker Mesh demo: workflows ({data['elapsed_s']} s)")
    for col in ("workflow", "runs", "successes", "failures", "retries", "p50", "p95"):
        t.add_column(col, justify="left" if col == "workflow" else "right")
    for w in data["workflows"]:
        t.add_row(w["workflow"], str(w["runs"]), str(w["successes"]), str(w["failures"]),
                  str(w["retries"]), _dur(w["p50_s"]), _dur(w["p95_s"]))
    console.print(t)
    o = Table(title="events: one outcome each")
    o.add_column("outcome")
    o.add_column("count", justify="right")
    for k, v in sorted(data["event_outcomes"].items()):
        o.add_row(k, str(v))
    o.add_row("dead-letter stream length", str(data["dead_letters"]))
    console.print(o)
    c = Table(title="cross-workflow triggers that fired")
    c.add_column("trigger")
    c.add_column("events", justify="right")
    for k, v in data["cross_workflow_triggers"].items():
        c.add_row(k, str(v))
    console.print(c)
    console.print(f"bulk GPU work held for the off-peak window: {data['gpu_bulk_held']} "
                  f"(next window opens {data['next_offpeak_window'] or 'now: window open'}; "
                  "`mesh gpu release` sends it now)")


def _dur(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
