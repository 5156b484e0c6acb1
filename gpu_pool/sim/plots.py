"""PNG plots of a simulation (matplotlib, Agg backend: no display needed).

One figure, three panels: nodes over the week per strategy; queue depth and held
items for autoscaling without and with deferral; cost per strategy split into
on-demand and off-peak. Off-peak windows are shaded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker_mesh.gpu_pool.sim.engine import RunResult

COLORS = {"fixed": "#7f7f7f", "autoscaled": "#d62728", "batched": "#ff7f0e", "deferred": "#2ca02c"}


def plot(path: str | Path, runs: dict[str, RunResult], strategies: dict[str, dict[str, Any]],
         spans: list[tuple[float, float]], currency: str = "USD") -> Path:
    from worker_mesh.mesh.extras import require

    matplotlib = require("matplotlib", "gpu-sim")
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def dt(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, UTC)

    fig, (ax_n, ax_q, ax_c) = plt.subplots(
        3, 1, figsize=(13, 11), gridspec_kw={"height_ratios": [2, 2, 1.3]})
    start = min(r.start for r in runs.values())
    end = max(r.end for r in runs.values())
    for ax in (ax_n, ax_q):
        for s, e in spans:
            if e > start and s < end:
                ax.axvspan(dt(max(s, start)), dt(min(e, end)), color="#1f77b4", alpha=0.08, lw=0)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M", tz=UTC))
        ax.set_xlim(dt(start), dt(end))
        ax.grid(alpha=0.3)
    for i, (key, run) in enumerate(runs.items()):
        xs = [dt(s.t) for s in run.samples]
        ax_n.step(xs, [s.nodes + 0.06 * i for s in run.samples], where="post",
                  color=COLORS.get(key), lw=1.1, label=strategies[key]["title"])
    ax_n.set_ylabel("nodes (billed)")
    ax_n.set_title("GPU nodes over the trace (shaded: off-peak windows)")
    ax_n.legend(loc="upper right", fontsize=8)
    for key in ("autoscaled", "deferred"):
        if key not in runs:
            continue
        run = runs[key]
        xs = [dt(s.t) for s in run.samples]
        ax_q.plot(xs, [s.queued_urgent + s.queued_bulk for s in run.samples],
                  color=COLORS[key], lw=1, label=f"{key}: queued (gpu + gpu-batch)")
        if any(s.held for s in run.samples):
            ax_q.plot(xs, [s.held for s in run.samples], color=COLORS[key], lw=1, ls="--",
                      label=f"{key}: held for the window")
    ax_q.set_yscale("symlog", linthresh=100)
    ax_q.set_ylabel("items")
    ax_q.set_title("Queue depth and held bulk work")
    ax_q.legend(loc="upper right", fontsize=8)
    keys = list(strategies)
    on = [strategies[k]["cost_on_demand"] for k in keys]
    off = [strategies[k]["cost_offpeak"] for k in keys]
    ax_c.barh(keys, on, color="#d62728", alpha=0.75, label="on demand")
    ax_c.barh(keys, off, left=on, color="#1f77b4", alpha=0.75, label="off-peak")
    for y, k in enumerate(keys):
        st = strategies[k]
        ax_c.text(st["cost"], y, f"  {st['cost']:.0f} {currency}, {st['node_hours']:.0f} node-h",
                  va="center", fontsize=8)
    ax_c.invert_yaxis()
    ax_c.set_xlabel(f"cost ({currency})")
    ax_c.set_title("Cost per strategy")
    ax_c.legend(loc="lower right", fontsize=8)
    ax_c.set_xlim(0, max(s["cost"] for s in strategies.values()) * 1.35)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
