"""The flow-control section of ``mesh status``: each rate limit's use of its window and
its waiting steps, each concurrency name's running and waiting steps."""

from __future__ import annotations

from typing import Any


def flow_data(client: Any, settings: Any) -> dict[str, Any]:
    """The section's JSON (empty lists when nothing is declared in ``flow``)."""
    from worker_mesh.mesh.flow.status import snapshot
    from worker_mesh.mesh.keys import Keys

    data = snapshot(client, Keys(settings.redis.key_prefix), settings.flow)
    data.pop("taken_at", None)
    return data


def _use(used: int, limit: int) -> str:
    return f"{used}/{limit} ({100 * used / limit:.0f}%)" if limit else "-"


def render_flow(data: dict[str, Any]) -> None:
    if not data["limits"] and not data["concurrency"]:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if data["limits"]:
        t = Table(title="rate limits", title_justify="left")
        for col in ("resource", "requests", "tokens", "waiting", "oldest wait", "paused",
                    "admitted", "throttled", "429s"):
            t.add_column(col, justify="right")
        for x in data["limits"]:
            oldest = f"{x['oldest_wait_s']:.0f}s" if x["waiting"] else "-"
            if x["over_sla"]:
                oldest = f"[red]{oldest} > SLA {x['wait_sla_s']:.0f}s[/red]"
            t.add_row(x["resource"], _use(x["window_requests"], x["limit_requests"]),
                      _use(x["window_tokens"], x["limit_tokens"]), str(x["waiting"]), oldest,
                      f"{x['paused_s']:.1f}s" if x["paused_s"] else "-", str(x["admitted"]),
                      str(x["throttled"]), str(x["pauses"]))
        console.print(t)
    if data["concurrency"]:
        c = Table(title="concurrency keys", title_justify="left")
        for col in ("name", "per key", "keys busy", "running", "waiting", "oldest wait"):
            c.add_column(col, justify="right")
        for x in data["concurrency"]:
            oldest = f"{x['oldest_wait_s']:.0f}s" if x["waiting"] else "-"
            if x["over_sla"]:
                oldest = f"[red]{oldest} > SLA[/red]"
            c.add_row(x["name"], str(x["limit_per_key"]), f"{x['keys_busy']}/{x['keys_seen']}",
                      str(x["running"]), str(x["waiting"]), oldest)
        console.print(c)
