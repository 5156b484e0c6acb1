"""``mesh gpu simulate`` as a function: load inputs, run the strategies, build the report.

The CLI (``workers/cli/gpu_cmd.py``) only parses options and prints what this returns.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from worker_mesh.gpu_pool.offpeak import Windows
from worker_mesh.gpu_pool.sim import generator, trace
from worker_mesh.gpu_pool.sim.engine import PoolSim
from worker_mesh.gpu_pool.sim.model import NodeModel, curve_from_bench, load_node_model, load_prices
from worker_mesh.gpu_pool.sim.report import URGENT_SLA_P99_S, Inputs, compare, run_all, window_intervals
from worker_mesh.mesh.settings import GpuSettings

DEFAULT_TRACE = "default_week.jsonl.gz"


def default_trace() -> trace.Trace:
    """The shipped default week (``gpu_pool/sim/data``), else generated from the same
    seed (the two are equal: a test checks it)."""
    res = resources.files("worker_mesh.gpu_pool.sim.data").joinpath(DEFAULT_TRACE)
    if res.is_file():
        with resources.as_file(res) as path:
            return trace.read(path)
    params = generator.GeneratorParams()
    return trace.Trace(tuple(generator.generate(params)), generator.meta(params))


def load_inputs(gpu: GpuSettings, *, trace_path: str | Path | None = None,
                prices_path: str | Path | None = None, node_path: str | Path | None = None,
                bench_path: str | Path | None = None,
                urgent_sla_p99_s: float = URGENT_SLA_P99_S) -> Inputs:
    tr = default_trace() if trace_path is None else trace.read(trace_path)
    node = load_node_model(node_path)
    if bench_path is not None:
        node = node.with_curve("embed", curve_from_bench(bench_path))
    return Inputs(tr, gpu, node, load_prices(prices_path), urgent_sla_p99_s)


def simulate(inp: Inputs, *, plot_path: str | Path | None = None,
             sensitivity: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    strategies, runs = run_all(inp)
    elapsed = time.perf_counter() - t0
    tr = inp.trace
    out: dict[str, Any] = {
        "trace": {"records": len(tr.records), "items": tr.items(),
                  "urgent_items": tr.items(urgent=True), "bulk_items": tr.items(urgent=False),
                  "start": trace.Record(tr.start, "", 1, True).as_json()["time"],
                  "hours": round((tr.end - tr.start) / 3600, 2), "meta": tr.meta},
        "settings": {"offpeak_windows": list(inp.gpu.offpeak_windows),
                     "max_batch": {t: inp.gpu.limits(t).max_batch for t in inp.node.curves},
                     "max_wait_ms": {t: inp.gpu.limits(t).max_wait_ms for t in inp.node.curves},
                     "target_per_worker": inp.gpu.target_per_worker,
                     "max_workers": inp.node.max_nodes or inp.gpu.max_workers,
                     "idle_to_zero_s": inp.gpu.idle_to_zero_s, "cooldown_s": inp.gpu.cooldown_s,
                     "prewarm_s": inp.gpu.prewarm_s, "deadline_lead_s": inp.gpu.deadline_lead_s},
        "node_model": inp.node.as_dict(),
        "prices": {"currency": inp.prices.currency,
                   "on_demand_per_node_h": inp.prices.on_demand_per_node_h,
                   "offpeak_per_node_h": inp.prices.offpeak_per_node_h,
                   "source": inp.prices.source},
        "urgent_sla_p99_s": inp.urgent_sla_p99_s,
        "strategies": strategies,
        **compare(strategies, inp.urgent_sla_p99_s),
        "simulated_in_s": round(elapsed, 2),
    }
    if sensitivity:
        from worker_mesh.gpu_pool.sim.sensitivity import bulk_work_share, table

        out["bulk_work_share"] = round(bulk_work_share(tr, inp), 3)
        out["sensitivity"] = table(inp)
    if plot_path is not None:
        from worker_mesh.gpu_pool.sim.plots import plot

        spans = window_intervals(Windows.parse(inp.gpu.offpeak_windows), tr.start,
                                 max(r.end for r in runs.values()))
        out["plot"] = str(plot(plot_path, runs, strategies, spans, inp.prices.currency))
    return out


def render(data: dict[str, Any]) -> list[str]:
    """The human-readable report, line by line."""
    cur = data["prices"]["currency"]
    t = data["trace"]
    lines = [f"trace: {t['records']} lines, {t['items']:,} items ({t['urgent_items']:,} urgent, "
             f"{t['bulk_items']:,} bulk) over {t['hours']} h from {t['start']}",
             f"prices: {data['prices']['on_demand_per_node_h']} {cur}/node-h on demand, "
             f"{data['prices']['offpeak_per_node_h']} off-peak "
             f"({', '.join(data['settings']['offpeak_windows'])}); boot "
             f"{data['node_model']['boot_s']:.0f} s; urgent SLA p99 {data['urgent_sla_p99_s']:.0f} s",
             "",
             f"{'strategy':<58} {'node-h':>7} {'cost':>9} {'util':>5} {'urg p50':>8} "
             f"{'urg p99':>8} {'misses':>6}"]
    for s in data["strategies"].values():
        lines.append(f"{s['title']:<58} {s['node_hours']:>7.1f} {s['cost']:>9.2f} "
                     f"{s['utilisation']:>5.2f} {s['urgent_wait_p50_s']:>7.2f}s "
                     f"{s['urgent_wait_p99_s']:>7.1f}s {s['deadline_misses']:>6}")
    lines.append("")
    if "saved_pct_vs_autoscaled" in data:
        lines.append(f"strategy 4 vs 2: {data['saved_pct_vs_autoscaled']}% cheaper "
                     f"(vs fixed pool: {data.get('saved_pct_vs_fixed')}%)")
    steps = data.get("savings_by_step", {})
    if steps:
        lines.append("where the savings come from (" + cur + "): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}" for k, v in steps.items()))
    for row in data.get("sensitivity", []):
        extra = f" (bulk work share {row['bulk_work_share']})" if "bulk_work_share" in row else ""
        lines.append(f"  {row['vary']:<12} {row['value']!s:>6}{extra}: 4 vs 2 saves "
                     f"{row['saved_pct_vs_autoscaled']:>5}%, misses {row['deadline_misses']}, "
                     f"urgent p99 {row['urgent_wait_p99_s']} s")
    lines.append(f"simulated in {data['simulated_in_s']} s")
    if "plot" in data:
        lines.append(f"plot: {data['plot']}")
    return lines


def predict_one_worker(tr: trace.Trace, gpu: GpuSettings, node: NodeModel) -> dict[str, Any]:
    """What the simulator predicts for ONE always-ready worker with batching and
    deferral (the cross-check's real setup: one GPU worker, a real dispatcher and
    releaser): items done, held and released counts, mean queueing delay per queue."""
    from worker_mesh.gpu_pool.sim.engine import Strategy

    strat = Strategy("one-worker", "one worker, batching, deferral", False, True, True, 1)
    res = PoolSim(tr, gpu, node, strat, drain_cap_s=3600).run()
    return {"items_done": round(sum(res.items_done.values())), "held": round(res.held_total),
            "released": {k: round(v) for k, v in res.released.items()},
            "urgent_wait_mean_s": round(res.urgent.waits.mean, 3),
            "bulk_wait_mean_s": round(res.bulk.waits.mean, 3),
            "urgent_wait_p50_s": round(res.urgent.waits.quantile(0.5), 3),
            "bulk_wait_p50_s": round(res.bulk.waits.quantile(0.5), 3)}
