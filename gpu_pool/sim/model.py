"""The node model and the price table the simulator runs against.

A *node* is one GPU worker (one pod on one GPU node). What it costs and how fast it is:

- ``boot_s``: from the scale-up decision to serving (node provisioning, image pull,
  model load); billed from the request on;
- a throughput curve per task type: the seconds one forward pass of ``b`` items takes,
  ``pass_s(b) = fixed_s + per_item_s * b``, fitted (least squares) to measured
  ``{batch size: items/s}`` points from the batching benchmark's JSON
  (``benchmarks/bench_gpu_batching.py``): its one-task-per-chunk median is the
  ``b = 1`` point, its micro-batched median the ``b = batch`` point. A line through
  (1, B) is the simplest curve that both points pin down; it extrapolates to larger
  batches linearly (saturating items/s), which is what GPUs and CPUs both show;
- ``release_items_per_s``: how fast the releaser moves held work to the queue
  (``benchmarks/bench_release.py``);
- billing: ``billing_granularity_s`` (the unit a node's lifetime is rounded up to)
  and ``billing_minimum_s`` (the least billed per node start).

The price table: per node-hour on demand, and off-peak (a time-of-day tariff, or
spot capacity bought for the window: bulk work tolerates preemption because a failed
pass is retried) applied to node-seconds inside the off-peak windows, for every
strategy alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from worker_mesh.mesh.errors import ConfigError

DATA = "worker_mesh.gpu_pool.sim.data"


class ModelError(ConfigError):
    """A node model or price table that cannot be used; names the file and field."""


@dataclass(frozen=True)
class Curve:
    """``pass_s(b) = fixed_s + per_item_s * b`` for one task type."""

    fixed_s: float
    per_item_s: float
    points: dict[int, float] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def fit(cls, points: dict[int, float], source: str = "") -> Curve:
        """Least-squares line through ``(b, b / items_per_s)``; one point: no fixed part."""
        if not points or any(b < 1 or r <= 0 for b, r in points.items()):
            raise ModelError(f"throughput points {points}: need batch >= 1 and items/s > 0")
        xs = sorted(points)
        ys = [b / points[b] for b in xs]
        if len(xs) == 1:
            return cls(0.0, ys[0] / xs[0], dict(points), source)
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        slope = max(slope, 1e-9)
        fixed = max(0.0, my - slope * mx)
        return cls(fixed, slope, dict(points), source)

    def pass_s(self, b: float) -> float:
        return self.fixed_s + self.per_item_s * b

    def items_per_s(self, b: float) -> float:
        return b / self.pass_s(b)


@dataclass(frozen=True)
class NodeModel:
    boot_s: float
    curves: dict[str, Curve]
    default_task_type: str = "embed"
    max_nodes: int | None = None
    """None: the settings' ``gpu.max_workers``."""
    billing_granularity_s: float = 1.0
    billing_minimum_s: float = 60.0
    release_items_per_s: float = 1500.0
    sources: dict[str, str] = field(default_factory=dict)

    def curve(self, task_type: str) -> Curve:
        return self.curves.get(task_type) or self.curves[self.default_task_type]

    def with_curve(self, task_type: str, curve: Curve) -> NodeModel:
        return replace(self, curves={**self.curves, task_type: curve})

    def as_dict(self) -> dict[str, Any]:
        return {
            "boot_s": self.boot_s, "max_nodes": self.max_nodes,
            "billing_granularity_s": self.billing_granularity_s,
            "billing_minimum_s": self.billing_minimum_s,
            "release_items_per_s": self.release_items_per_s,
            "curves": {k: {"fixed_s": round(c.fixed_s, 6), "per_item_s": round(c.per_item_s, 6),
                           "points": c.points, "source": c.source}
                       for k, c in self.curves.items()},
            "sources": self.sources,
        }


@dataclass(frozen=True)
class Prices:
    on_demand_per_node_h: float
    offpeak_per_node_h: float
    currency: str = "USD"
    source: str = ""

    @property
    def ratio(self) -> float:
        return self.offpeak_per_node_h / self.on_demand_per_node_h


def _load_json(path: str | Path | None, default: str) -> tuple[dict[str, Any], str]:
    if path is None:
        text = resources.files(DATA).joinpath(default).read_text(encoding="utf-8")
        return json.loads(text), f"{DATA}/{default}"
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8")), str(p)
    except FileNotFoundError as exc:
        raise ModelError(f"{p}: no such file") from exc
    except ValueError as exc:
        raise ModelError(f"{p}: not JSON ({exc})") from exc


def _num(d: dict[str, Any], key: str, where: str, *, minimum: float = 0.0) -> float:
    v = d.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or v < minimum:
        raise ModelError(f"{where}: field {key!r} must be a number >= {minimum}, got {v!r}")
    return float(v)


def load_node_model(path: str | Path | None = None) -> NodeModel:
    """The node model JSON (default: the shipped one, built from this repo's benchmarks)."""
    d, where = _load_json(path, "node_model.json")
    curves = {}
    for task_type, c in (d.get("throughput") or {}).items():
        try:
            pts = {int(b): float(r) for b, r in c["points"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: field 'throughput.{task_type}.points' must map "
                             f"batch size to items/s") from exc
        curves[task_type] = Curve.fit(pts, c.get("source", ""))
    default = d.get("default_task_type", "embed")
    if default not in curves:
        raise ModelError(f"{where}: field 'default_task_type' {default!r} has no throughput entry")
    max_nodes = d.get("max_nodes")
    if max_nodes is not None and (not isinstance(max_nodes, int) or max_nodes < 1):
        raise ModelError(f"{where}: field 'max_nodes' must be an integer >= 1 or null")
    return NodeModel(
        boot_s=_num(d, "boot_s", where), curves=curves, default_task_type=default,
        max_nodes=max_nodes,
        billing_granularity_s=_num(d, "billing_granularity_s", where, minimum=1e-9),
        billing_minimum_s=_num(d, "billing_minimum_s", where),
        release_items_per_s=_num(d, "release_items_per_s", where, minimum=1e-9),
        sources={k: str(v) for k, v in (d.get("sources") or {}).items()})


def load_prices(path: str | Path | None = None) -> Prices:
    """The price table JSON (default: the shipped example prices)."""
    d, where = _load_json(path, "prices.json")
    on = _num(d, "on_demand_per_node_h", where, minimum=1e-12)
    off = _num(d, "offpeak_per_node_h", where)
    return Prices(on, off, str(d.get("currency", "USD")), str(d.get("source", "")))


def curve_from_bench(path: str | Path) -> Curve:
    """The ``embed`` curve from a ``bench_gpu_batching`` JSON (wall-clock medians):
    one task per chunk is batch 1, micro-batched is batch ``batch``."""
    d, where = _load_json(path, "")
    try:
        rates = d["wall"]["items_per_s"]
        pts = {1: float(rates["one_task_per_chunk"]["median"]),
               int(d["batch"]): float(rates["micro_batched_queue"]["median"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: not a bench_gpu_batching result (need batch and "
                         f"wall.items_per_s.*.median)") from exc
    return Curve.fit(pts, f"{where} ({d.get('device', '?')}, wall medians)")
