"""Shared helpers of the benchmarks: an embedded ``redis-server``, settings pointing at
it, medians over repeats, realistic events, and JSON output.

Why medians and same-run baselines: the benchmark machine is shared (other processes
compete for its two cores), so absolute numbers move from run to run; the median of
several repeats and the ratio to a baseline measured in the same run are what can be
compared between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from events.base import Event
from events.catalog import ContentRequested, ContentUpdated, CustomerActivity, CustomerUpdated
from mesh.embedded import EmbeddedRedis
from mesh.settings import MeshSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@contextlib.contextmanager
def embedded_redis(extra_args: list[str] | None = None) -> Iterator[EmbeddedRedis]:
    """A throw-away ``redis-server`` on a free port (AOF on, fsync every second, as
    the mesh runs it)."""
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp), extra_args=list(extra_args or []))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def bench_settings(server: EmbeddedRedis, **env: str) -> MeshSettings:
    """Settings for one benchmark: its own key prefix on ``server``."""
    base = {
        "MESH_REDIS_URL": server.url,
        "MESH_REDIS_KEY_PREFIX": "b" + uuid.uuid4().hex[:8],
    }
    base.update(env)
    return MeshSettings.load(base)


def child_env(settings: MeshSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child mesh process (dispatcher, worker) for ``settings``."""
    out = {k: v for k, v in os.environ.items() if not k.upper().startswith("MESH_")}
    out.update(settings.to_env())
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out["HF_HUB_OFFLINE"] = "1"
    out["TRANSFORMERS_OFFLINE"] = "1"
    out.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        out.update(extra)
    return out


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, spread and the samples themselves (rounded) of repeated measurements."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": [round(s, 3) for s in samples]}


def median_of(fn: Callable[[], float], repeats: int) -> dict[str, Any]:
    """Run ``fn`` (which returns one measurement) ``repeats`` times."""
    return summary([fn() for _ in range(repeats)])


def rate(n: int, fn: Callable[[], object]) -> float:
    """Items per second of one call of ``fn`` that handles ``n`` items."""
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def realistic_events(n: int, seed: int = 7, entities: int = 5000) -> list[Event]:
    """A mix like production traffic: mostly customer activity/updates, some content
    edits with a ~1 KB body, a few content requests. Built (and so validated) here,
    by the "application", before any publishing is timed."""
    rng = random.Random(seed)
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 18)[:1000]
    out: list[Event] = []
    for i in range(n):
        cid = str(rng.randrange(entities))
        roll = rng.random()
        if roll < 0.45:
            out.append(CustomerActivity(customer_id=cid, logins_30d=rng.randrange(200),
                                        active_days_30d=rng.randrange(31),
                                        support_tickets_30d=rng.randrange(5)))
        elif roll < 0.80:
            out.append(CustomerUpdated(customer_id=cid, plan=rng.choice(["free", "pro"]),
                                       seats=rng.randrange(1, 50), mrr=round(rng.random() * 900, 2),
                                       version=i + 1))
        elif roll < 0.95:
            out.append(ContentUpdated(content_id=f"doc-{cid}", title=f"Title {i}", body=body,
                                      version=i + 1, tags=["billing", "faq"]))
        else:
            out.append(ContentRequested(content_id=f"req-{i}", topic="Reducing churn",
                                        keywords=["churn", "retention"], min_words=200))
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the load average shows the sharing)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_1_5_15": load,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def emit(name: str, result: dict[str, Any], *, write: bool = True) -> dict[str, Any]:
    """Print ``result`` as JSON and keep it in ``benchmarks/results/<name>.json``."""
    doc = {"benchmark": name, "machine": machine(), **result}
    text = json.dumps(doc, indent=2, sort_keys=False, default=str)
    print(text, flush=True)
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS / f"{name}.json.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(RESULTS / f"{name}.json")
    return doc


def goal(value: float, target: float, *, higher_is_better: bool = True) -> dict[str, Any]:
    met = value >= target if higher_is_better else value <= target
    return {"value": round(value, 3), "target": target, "met": met}


__all__ = ["bench_settings", "child_env", "embedded_redis", "emit", "goal", "machine",
           "median_of", "percentile", "rate", "realistic_events", "summary"]
