"""Flow control against a provider that enforces its limit: ``mesh bench --only ratelimit``.

A local OpenAI-compatible server (``tests/flow/limited_llm.py``) allows 120 requests
and 20,000 tokens per sliding minute and answers 429 beyond. Behind it, 8 worker
processes (2 workers x 4) run 1,000 content requests (prepare -> generate -> publish):

- ``with_limiter``: ``flow.limits`` declares the provider's budget; the generate step
  asks for a permit per call (estimate = prompt + ``max_tokens``), reconciles with the
  reported ``usage``, and waits by rescheduling. Reported: the most requests and tokens
  the server saw in any sliding minute, its 429 count, failed runs, completion time and
  throughput relative to the binding limit (requests, or tokens at the measured
  tokens per call).
- ``without_limiter``: the same run where every worker reacts to its own 429s (the
  API-call retry policy honouring ``Retry-After``): its 429 count, failed runs and
  completion time.
- ``fairness``: tenant A floods 5,000 bulk requests, tenant B sends 1,000 bulk ones
  right after, and 20 urgent requests arrive once both wait: the urgent requests' p95
  wait (request -> provider call) against the stated bound (20 urgent calls at the
  budget's pace + 5 s), and B's share of the bulk calls while both wait (0.5 is equal).

``--quick`` scales the minute down to 10 s and the limits with it (60 requests and
10,000 tokens per 10 s), 150 requests and a 500 + 150 bulk flood: minutes, not tens.
Top-level keys: limit_rpm, max_requests_in_any_minute, limit_tpm,
max_tokens_in_any_minute, runs_failed, throughput_ratio_to_limit (for ``--quick``,
"minute" is the scaled interval, given as interval_s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import bench_settings, embedded_redis, emit, goal, percentile
from tests.flow.limited_llm import LimitedLlm
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentRequested
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers import procs
from worker_mesh.workers.app import create_app
from worker_mesh.workers.runstats import RunStats


@dataclass(frozen=True)
class Cfg:
    runs: int
    rpm: int
    tpm: int
    interval_s: float
    margin_s: float
    flood: int
    bulk_b: int
    urgent: int
    fair_measure_s: float
    timeout_s: float


FULL = Cfg(1000, 120, 20_000, 60.0, 1.0, 5000, 1000, 20, 180.0, 1500.0)
QUICK = Cfg(150, 60, 10_000, 10.0, 0.25, 500, 150, 20, 40.0, 300.0)
WORKERS, CONCURRENCY = 2, 4


@dataclass
class Mesh:
    settings: MeshSettings
    srv: LimitedLlm
    starter: CeleryStarter
    stats: RunStats
    sent: dict[str, float]

    def request(self, n: int, tenant: str, priority: str = "normal") -> None:
        topic = f"Export guide {n} for tenant {tenant}"
        env = Envelope.wrap(ContentRequested(
            content_id=f"{tenant}-{n}", topic=topic, keywords=["export"], min_words=30,
            customer_id=tenant, priority=priority))  # type: ignore[arg-type]
        self.sent[topic] = time.time()
        self.starter.start(StartRequest("content", env, self.starter.run_id("content", env)))

    def ended(self) -> int:
        return self.stats.get("content").runs


@contextmanager
def mesh(cfg: Cfg, *, limited: bool) -> Iterator[Mesh]:
    """A fresh Redis, the limited provider and 8 worker processes."""
    with embedded_redis() as server, LimitedLlm(cfg.rpm, cfg.tpm, cfg.interval_s) as srv, \
            tempfile.TemporaryDirectory(prefix="mesh-bench-rl-") as tmp:
        env = {"MESH_LLM_PROVIDER": "openai", "MESH_LLM_BASE_URL": srv.url,
               "MESH_LLM_MAX_TOKENS": "300", "MESH_FLOW_CLOCK_MARGIN_S": str(cfg.margin_s)}
        if limited:
            env["MESH_FLOW_LIMITS"] = json.dumps({"llm": {
                "requests_per_interval": cfg.rpm, "tokens_per_interval": cfg.tpm,
                "interval_s": cfg.interval_s}})
        s = bench_settings(server, **env)
        workers = [procs.start(f"w{i}", ["worker", "-Q", "cpu,io", "-c", str(CONCURRENCY),
                                         "-n", f"rl{i}@%h"], s, Path(tmp) / "logs")
                   for i in range(WORKERS)]
        try:
            app = create_app(s)
            stats = RunStats(make_client(s.redis), Keys(s.redis.key_prefix))
            yield Mesh(s, srv, CeleryStarter(app, load_workflows(s)), stats, {})
        finally:
            for w in workers:
                w.stop()


def throughput(cfg: Cfg, *, limited: bool) -> dict[str, Any]:
    with mesh(cfg, limited=limited) as m:
        t0 = time.time()
        for i in range(cfg.runs):
            m.request(i, f"t{i % 50}")
        deadline = t0 + cfg.timeout_s
        while m.ended() < cfg.runs and time.time() < deadline:
            time.sleep(1)
        done = time.time()
        st = m.stats.get("content")
        srv = m.srv
    calls = sorted(c.at for c in srv.accepted)
    max_r, max_t = srv.max_in_any_window()
    tokens = sum(c.tokens for c in srv.accepted)
    per_call = tokens / max(len(calls), 1)
    binding = min(cfg.rpm, cfg.tpm / per_call) if calls else float(cfg.rpm)
    span = (calls[-1] - calls[0]) if len(calls) > 1 else float("nan")
    achieved = (len(calls) - 1) / span * cfg.interval_s if len(calls) > 1 else 0.0
    return {"runs": cfg.runs, "runs_succeeded": st.successes, "runs_failed": st.failures,
            "runs_unfinished": cfg.runs - st.runs, "completion_time_s": round(done - t0, 1),
            "requests_accepted": len(calls), "requests_429": srv.rejected,
            "max_requests_in_any_window": max_r, "max_tokens_in_any_window": max_t,
            "tokens_per_call": round(per_call, 1), "binding_limit_per_window": round(binding, 1),
            "calls_per_window_achieved": round(achieved, 1),
            "throughput_ratio_to_limit": round(achieved / binding, 3) if calls else 0.0}


def fairness(cfg: Cfg) -> dict[str, Any]:
    with mesh(cfg, limited=True) as m:
        for i in range(cfg.flood):
            m.request(i, "ta", "bulk")
        for i in range(cfg.bulk_b):
            m.request(i, "tb", "bulk")
        srv = m.srv
        wait_calls = lambda: [c for c in srv.accepted if c.topic.endswith(" tb")]  # noqa: E731
        deadline = time.time() + cfg.timeout_s
        while not wait_calls() and time.time() < deadline:
            time.sleep(0.5)
        b_first = min(c.at for c in wait_calls())
        time.sleep(cfg.fair_measure_s / 4)  # both bulk tenants wait now
        for i in range(cfg.urgent):
            m.request(i, "tu", "urgent")
        time.sleep(max(b_first + cfg.fair_measure_s - time.time(), 0))
        end = time.time()
    counts = {t: sum(1 for c in srv.accepted if b_first <= c.at <= end and c.topic.endswith(t))
              for t in (" ta", " tb")}
    first_call: dict[str, float] = {}
    for c in sorted(srv.accepted, key=lambda c: c.at):
        first_call.setdefault(c.topic, c.at)
    urgent = [first_call[t] - m.sent[t] for t in m.sent if t.endswith(" tu") and t in first_call]
    pace = cfg.interval_s / cfg.rpm
    bound = cfg.urgent * pace + 5
    share_b = counts[" tb"] / max(counts[" ta"] + counts[" tb"], 1)
    p95 = percentile(urgent, 95) if len(urgent) == cfg.urgent else float("inf")
    return {"bulk_flood": cfg.flood, "bulk_other": cfg.bulk_b, "urgent": cfg.urgent,
            "measured_s": round(end - b_first, 1), "bulk_calls": {"ta": counts[" ta"], "tb": counts[" tb"]},
            "bulk_share_of_tb": round(share_b, 3),
            "urgent_wait_s": {"p50": round(percentile(urgent, 50), 2) if urgent else None,
                              "p95": round(p95, 2), "max": round(max(urgent), 2) if urgent else None},
            "urgent_p95_bound_s": round(bound, 2), "requests_429": srv.rejected,
            "goals": {"urgent_p95_within_bound": goal(p95, bound, higher_is_better=False),
                      "bulk_share_within_20pct": goal(abs(share_b - 0.5) / 0.5, 0.2,
                                                      higher_is_better=False)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s 'minutes', 150 requests")
    ap.add_argument("--only-limited", action="store_true", help="skip the baseline and fairness")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    limited = throughput(cfg, limited=True)
    baseline = {} if args.only_limited else throughput(cfg, limited=False)
    fair = {} if args.only_limited else fairness(cfg)
    emit("ratelimit", {
        "quick": args.quick, "interval_s": cfg.interval_s, "workers": WORKERS * CONCURRENCY,
        "limit_rpm": cfg.rpm, "max_requests_in_any_minute": limited["max_requests_in_any_window"],
        "limit_tpm": cfg.tpm, "max_tokens_in_any_minute": limited["max_tokens_in_any_window"],
        "runs_failed": limited["runs_failed"],
        "throughput_ratio_to_limit": limited["throughput_ratio_to_limit"],
        "with_limiter": limited, "without_limiter": baseline, "fairness": fair,
        "goals": {
            "never_above_rpm": goal(limited["max_requests_in_any_window"], cfg.rpm,
                                    higher_is_better=False),
            "never_above_tpm": goal(limited["max_tokens_in_any_window"], cfg.tpm,
                                    higher_is_better=False),
            "no_failed_runs": goal(limited["runs_failed"] + limited["runs_unfinished"], 0,
                                   higher_is_better=False),
            "throughput_ratio": goal(limited["throughput_ratio_to_limit"], 0.9)},
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
