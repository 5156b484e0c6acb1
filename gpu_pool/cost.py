"""GPU-seconds accounting and the deferral cost report.

Every forward pass adds its duration, split evenly over its items, to a Redis hash
keyed ``<task_type>|<peak|offpeak>|<deferred|direct>``: *offpeak* when the pass ran
inside an off-peak window, *deferred* for items that were held and released by the
releaser (header ``mesh_deferred``). The same seconds go to the
``mesh_gpu_seconds_total`` metric.

The report prices the recorded workload twice: *with deferral* is what it cost (each
second at the price of when it ran); *without deferral* prices the deferred seconds
at the peak price (they were held because they were submitted outside a window, so
without deferral they would have run then) and the rest as they ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import redis

from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors


def record(client: redis.Redis, keys: Keys, task_type: str, seconds: float, *,
           offpeak: bool, deferred: bool) -> None:
    field = f"{task_type}|{'offpeak' if offpeak else 'peak'}|{'deferred' if deferred else 'direct'}"
    with translate_errors("record GPU-seconds"):
        client.hincrbyfloat(keys.gpu_cost(), field, seconds)


@dataclass(frozen=True)
class TypeCost:
    task_type: str
    peak_s: float
    offpeak_s: float
    deferred_s: float
    cost_with_deferral: float
    cost_without_deferral: float


@dataclass(frozen=True)
class CostReport:
    peak_price: float
    offpeak_price: float
    by_type: list[TypeCost]

    @property
    def with_deferral(self) -> float:
        return sum(t.cost_with_deferral for t in self.by_type)

    @property
    def without_deferral(self) -> float:
        return sum(t.cost_without_deferral for t in self.by_type)

    def as_dict(self) -> dict[str, Any]:
        saved = self.without_deferral - self.with_deferral
        return {
            "unit": "price per GPU-second",
            "peak_price": self.peak_price,
            "offpeak_price": self.offpeak_price,
            "gpu_seconds": sum(t.peak_s + t.offpeak_s for t in self.by_type),
            "with_deferral": round(self.with_deferral, 6),
            "without_deferral": round(self.without_deferral, 6),
            "saved": round(saved, 6),
            "saved_pct": round(100 * saved / self.without_deferral, 2)
            if self.without_deferral else 0.0,
            "by_task_type": [asdict(t) for t in self.by_type],
        }


def report(client: redis.Redis, keys: Keys, *, peak_price: float,
           offpeak_price: float) -> CostReport:
    with translate_errors("read GPU-seconds"):
        raw = client.hgetall(keys.gpu_cost())
    secs: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        try:
            task_type, when, how = name.split("|")
        except ValueError:
            continue
        secs[task_type][(when, how)] = float(v)
    out = []
    for task_type in sorted(secs):
        s = secs[task_type]
        peak = s.get(("peak", "direct"), 0.0) + s.get(("peak", "deferred"), 0.0)
        off = s.get(("offpeak", "direct"), 0.0) + s.get(("offpeak", "deferred"), 0.0)
        deferred = s.get(("peak", "deferred"), 0.0) + s.get(("offpeak", "deferred"), 0.0)
        with_d = peak * peak_price + off * offpeak_price
        without = (s.get(("peak", "direct"), 0.0) * peak_price
                   + s.get(("offpeak", "direct"), 0.0) * offpeak_price
                   + deferred * peak_price)
        out.append(TypeCost(task_type, peak, off, deferred, with_d, without))
    return CostReport(peak_price, offpeak_price, out)
