"""When does deferral stop paying? Strategy 4 against 2 as one input moves.

- boot time (``boot_s``): a slow boot makes every scale-up pay idle minutes and keeps
  urgent work waiting; re-simulated;
- price ratio (off-peak / on-demand): only the bill changes, so the same runs are
  re-priced;
- bulk share: every bulk line's items scaled (the urgent lines untouched); re-simulated.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.sim.model import Prices
from worker_mesh.gpu_pool.sim.report import Inputs, bill, run_all, window_intervals
from worker_mesh.gpu_pool.sim.trace import Trace

BOOT_S = (30.0, 180.0, 600.0)
PRICE_RATIOS = (0.25, 0.4, 0.6, 0.8, 1.0)
BULK_FACTORS = (0.25, 0.5, 1.0, 1.5)


def scale_bulk(trace: Trace, factor: float) -> Trace:
    recs = tuple(r if r.urgent else replace(r, items=max(1, round(r.items * factor)))
                 for r in trace.records)
    return Trace(recs, dict(trace.meta))


def bulk_work_share(trace: Trace, inp: Inputs) -> float:
    """Bulk's share of the trace's GPU work (node-seconds at batch 1)."""
    def work(urgent: bool) -> float:
        return sum(r.items * inp.node.curve(r.task_type).pass_s(1) for r in trace.records
                   if r.urgent is urgent)

    bulk, urgent = work(False), work(True)
    return bulk / (bulk + urgent) if bulk + urgent else 0.0


def _row(name: str, value: Any, s: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    c2, c4 = s["autoscaled"]["cost"], s["deferred"]["cost"]
    return {"vary": name, "value": value, **extra,
            "cost_autoscaled": c2, "cost_deferred": c4,
            "saved_pct_vs_autoscaled": round(100 * (c2 - c4) / c2, 1) if c2 else 0.0,
            "deadline_misses": s["deferred"]["deadline_misses"],
            "urgent_wait_p99_s": s["deferred"]["urgent_wait_p99_s"]}


def table(inp: Inputs) -> list[dict[str, Any]]:
    keys = ("autoscaled", "deferred")
    rows: list[dict[str, Any]] = []
    base, runs = run_all(inp, keys)
    for boot in BOOT_S:
        s = base if boot == inp.node.boot_s else run_all(
            replace(inp, node=replace(inp.node, boot_s=boot)), keys)[0]
        rows.append(_row("boot_s", boot, s))
    spans = window_intervals(Windows.parse(inp.gpu.offpeak_windows), inp.trace.start,
                             inp.trace.end + 3 * 86400)
    for ratio in PRICE_RATIOS:
        p = Prices(inp.prices.on_demand_per_node_h, inp.prices.on_demand_per_node_h * ratio,
                   inp.prices.currency)
        s = {k: {"cost": round(bill(runs[k], inp.node, p, spans).cost, 2),
                 "deadline_misses": base[k]["deadline_misses"],
                 "urgent_wait_p99_s": base[k]["urgent_wait_p99_s"]} for k in keys}
        rows.append(_row("price_ratio", ratio, s))
    for f in BULK_FACTORS:
        tr = scale_bulk(inp.trace, f)
        s = base if f == 1.0 else run_all(replace(inp, trace=tr), keys)[0]
        rows.append(_row("bulk_factor", f, s, bulk_work_share=round(bulk_work_share(tr, inp), 3)))
    return rows


