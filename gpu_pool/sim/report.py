"""From simulated runs to the figures a person (or a script) checks.

Billing: every node is billed from its request to its removal (boot included, idle
included), rounded up to ``billing_granularity_s`` with at least ``billing_minimum_s``
per start; its node-seconds inside the off-peak windows are priced off-peak, the rest
(rounding included) on demand. The windows are the settings' ``gpu.offpeak_windows``,
read through ``gpu_pool.offpeak.Windows`` like everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.sim.engine import STRATEGIES, PoolSim, RunResult, Strategy
from worker_mesh.gpu_pool.sim.model import NodeModel, Prices
from worker_mesh.gpu_pool.sim.trace import Trace
from worker_mesh.mesh.settings import GpuSettings

URGENT_SLA_P99_S = 60.0
"""Default urgent SLA: 99% of urgent items start their forward pass within 60 s of
submission (an edited document is searchable within about a minute)."""


def window_intervals(windows: Windows, start: float, end: float) -> list[tuple[float, float]]:
    """The open spans of ``windows`` between ``start`` and ``end`` (epoch seconds)."""
    out: list[tuple[float, float]] = []
    if not windows:
        return out
    t = datetime.fromtimestamp(start, UTC)
    stop = datetime.fromtimestamp(end, UTC)
    while t < stop:
        nxt = windows.next_open(t)
        if nxt is None or nxt >= stop:
            break
        ends = [e for w in windows.windows if (e := w.current_end(nxt)) is not None]
        close = min(max(ends), stop) if ends else stop
        if out and abs(out[-1][1] - nxt.timestamp()) < 1e-6:
            out[-1] = (out[-1][0], close.timestamp())
        else:
            out.append((nxt.timestamp(), close.timestamp()))
        t = close
    return out


def _overlap(a: float, b: float, spans: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in spans)


@dataclass(frozen=True)
class Bill:
    node_s: float
    offpeak_s: float
    cost: float
    cost_on_demand: float
    cost_offpeak: float


def bill(run: RunResult, node: NodeModel, prices: Prices, spans: list[tuple[float, float]]) -> Bill:
    total = off = 0.0
    for nd in run.nodes:
        end = nd.removed if nd.removed is not None else run.end
        life = max(0.0, end - nd.requested)
        billed = max(node.billing_minimum_s,
                     math.ceil(life / node.billing_granularity_s - 1e-9) * node.billing_granularity_s)
        total += billed
        off += _overlap(nd.requested, end, spans)
    on_cost = (total - off) / 3600 * prices.on_demand_per_node_h
    off_cost = off / 3600 * prices.offpeak_per_node_h
    return Bill(total, off, on_cost + off_cost, on_cost, off_cost)


def summarize(run: RunResult, b: Bill) -> dict[str, Any]:
    w = run.urgent.waits
    done = sum(run.items_done.values())
    return {
        "title": run.strategy.title,
        "node_hours": round(b.node_s / 3600, 2),
        "offpeak_node_hours": round(b.offpeak_s / 3600, 2),
        "cost": round(b.cost, 2),
        "cost_on_demand": round(b.cost_on_demand, 2),
        "cost_offpeak": round(b.cost_offpeak, 2),
        "utilisation": round(run.busy_node_s / b.node_s, 4) if b.node_s else 0.0,
        "busy_node_hours": round(run.busy_node_s / 3600, 2),
        "urgent_wait_p50_s": round(w.quantile(0.50), 3),
        "urgent_wait_p99_s": round(w.quantile(0.99), 2),
        "urgent_wait_mean_s": round(w.mean, 3),
        "urgent_wait_max_s": round(w.max, 1),
        "deadline_misses": round(run.bulk.missed),
        "items_done": round(done),
        "items_done_by_type": {k: round(v) for k, v in sorted(run.items_done.items())},
        "unfinished_items": round(run.unfinished),
        "held_items": round(run.held_total),
        "released_items": {k: round(v) for k, v in run.released.items()},
        "node_starts": len(run.nodes),
        "peak_nodes": max((s.nodes for s in run.samples), default=0),
        "simulated_hours": round((run.end - run.start) / 3600, 2),
    }


@dataclass(frozen=True)
class Inputs:
    trace: Trace
    gpu: GpuSettings
    node: NodeModel
    prices: Prices
    urgent_sla_p99_s: float = URGENT_SLA_P99_S


def run_all(inp: Inputs, keys: tuple[str, ...] = ("fixed", "autoscaled", "batched", "deferred"),
            ) -> tuple[dict[str, Any], dict[str, RunResult]]:
    """Every strategy on one trace; the fixed pool gets the autoscaled pool's peak."""
    by_key = {s.key: s for s in STRATEGIES}
    spans = window_intervals(Windows.parse(inp.gpu.offpeak_windows), inp.trace.start,
                             inp.trace.end + 3 * 86400)
    max_nodes = inp.node.max_nodes
    runs: dict[str, RunResult] = {}
    order = [k for k in ("autoscaled", "batched", "deferred", "fixed") if k in keys]
    if "fixed" in keys and "autoscaled" not in keys:
        order.insert(0, "autoscaled")
    for k in order:
        strat: Strategy = by_key[k]
        if k == "fixed":
            peak = max((s.nodes for s in runs["autoscaled"].samples), default=1)
            strat = replace(strat, fixed_nodes=max(1, peak))
        runs[k] = PoolSim(inp.trace, inp.gpu, inp.node, strat, max_nodes=max_nodes).run()
    out = {k: summarize(runs[k], bill(runs[k], inp.node, inp.prices, spans))
           for k in keys if k in runs}
    return out, runs


def compare(strategies: dict[str, dict[str, Any]], sla_s: float) -> dict[str, Any]:
    """Top-level figures: savings of 4 vs 2 and where the savings come from."""
    def cost(k: str) -> float | None:
        return strategies[k]["cost"] if k in strategies else None

    c1, c2, c3, c4 = (cost(k) for k in ("fixed", "autoscaled", "batched", "deferred"))
    out: dict[str, Any] = {}
    if c2 and c4 is not None:
        out["saved_pct_vs_autoscaled"] = round(100 * (c2 - c4) / c2, 1)
    if c1 and c4 is not None:
        out["saved_pct_vs_fixed"] = round(100 * (c1 - c4) / c1, 1)
    steps = {}
    if c1 is not None and c2 is not None:
        steps["autoscaling_and_scale_to_zero"] = round(c1 - c2, 2)
    if c2 is not None and c3 is not None:
        steps["micro_batching"] = round(c2 - c3, 2)
    if c3 is not None and c4 is not None:
        steps["offpeak_deferral_and_prewarm"] = round(c3 - c4, 2)
    out["savings_by_step"] = steps
    if "deferred" in strategies:
        d = strategies["deferred"]
        out["goals"] = {
            "saved_pct_vs_autoscaled_ge_40": out.get("saved_pct_vs_autoscaled", 0) >= 40,
            "deadline_misses_zero": d["deadline_misses"] == 0,
            "urgent_p99_within_sla": d["urgent_wait_p99_s"] <= sla_s,
        }
    return out
