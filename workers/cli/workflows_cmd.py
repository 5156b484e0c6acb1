"""`mesh workflows`: the registered workflows and what starts them."""

from __future__ import annotations

from typing import Any

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings


@click.command("workflows")
@json_option
def workflows_cmd(as_json: bool) -> None:
    """List every workflow: version, triggers (event types, with filters), coalescing
    window and freshness SLA."""
    from worker_mesh.chains.loader import load_workflows

    registry = load_workflows(load_settings(check_redis=False))
    rows: list[dict[str, Any]] = []
    for wf in registry:
        rows.append({
            "workflow": wf.name,
            "version": wf.version,
            "triggers": [t.event_type + (" (filtered)" if t.where else "") for t in wf.triggers],
            "coalesce": (None if wf.coalesce is None else
                         {"window_s": wf.coalesce.window_s, "max_wait_s": wf.coalesce.max_wait_s}),
            "sla_s": wf.sla_s,
            "description": wf.description,
        })
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="workflows")
    for col in ("workflow", "version", "started by", "coalescing", "SLA"):
        t.add_column(col, no_wrap=True)
    t.add_column("what it does")
    for r in rows:
        co = r["coalesce"]
        t.add_row(r["workflow"], r["version"], "\n".join(r["triggers"]) or "(started directly)",
                  "-" if co is None else f"{co['window_s']:g} s (max {co['max_wait_s']:g} s)",
                  _dur(r["sla_s"]), r["description"])
    Console().print(t)


def _dur(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


COMMANDS = [workflows_cmd]
