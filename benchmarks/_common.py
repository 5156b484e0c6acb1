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
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from worker_mesh.events.base import Event
from worker_mesh.events.catalog import ContentRequested, ContentUpdated, CustomerActivity, CustomerUpdated
from worker_mesh.events.outcomes import totals
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers import procs
from worker_mesh.workers.procs import Proc

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


PROBE_MODULES = '["benchmarks.probe"]'


def probe_settings(server: EmbeddedRedis, **env: str) -> MeshSettings:
    """Settings whose processes load the benchmark probe (event type, workflow, task)."""
    return bench_settings(server, **{"MESH_CELERY_EXTRA_MODULES": PROBE_MODULES, **env})


def dispatcher_available() -> bool:
    """Whether ``mesh dispatcher`` exists yet (it is built in parallel with these)."""
    try:
        from worker_mesh.workers.cli import cli  # type: ignore[attr-defined]
    except ImportError:
        cli = None
    if cli is not None and "dispatcher" in getattr(cli, "commands", {}):
        return True
    import importlib.util

    return importlib.util.find_spec("worker_mesh.events.dispatcher") is not None


def start_mesh(name: str, args: list[str], settings: MeshSettings, log_dir: Path,
               profile_to: Path | None = None) -> Proc:
    """Start ``mesh <args>`` as a child process (optionally under cProfile, written
    when it exits after SIGTERM)."""
    if profile_to is None:
        return procs.start(name, args, settings, log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    fh = open(log, "wb")  # noqa: SIM115 - closed by the child's lifetime
    popen = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", str(profile_to), "-m", "worker_mesh.workers.cli", *args],
        cwd=ROOT, env=procs.child_env(settings), stdout=fh, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Proc(name, popen, log)


def accounted(client: redis.Redis, keys: Keys, partitions: int) -> dict[str, int]:
    """Outcome -> count over all partitions (what ``mesh audit`` reconciles)."""
    out: dict[str, int] = {}
    for p in range(partitions):
        for k, v in totals(client.hgetall(keys.outcomes(p))).items():
            out[k] = out.get(k, 0) + v
    return out


def celery_queue_key(keys: Keys, queue: str = "cpu") -> str:
    """The Redis list of a Celery queue under the mesh's ``global_keyprefix``."""
    return keys.celery_prefix() + queue


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.01) -> Any:
    return procs.wait_for(pred, timeout_s=timeout_s, interval_s=interval_s, what=what)


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


__all__ = ["accounted", "bench_settings", "celery_queue_key", "dispatcher_available", "embedded_redis",
           "emit", "goal", "machine", "median_of", "percentile", "probe_settings", "rate",
           "realistic_events", "start_mesh", "summary", "wait_until"]
