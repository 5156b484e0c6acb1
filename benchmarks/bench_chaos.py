"""Redis chaos, several runs in a row: the run ledger's end-to-end guarantee measured.

Each run is the scenario of ``tests/reliability/chaos.py``: ``customer.activity`` events
published at ``--rate`` per second for ``--seconds`` while redis-server is SIGTERM-
restarted twice (same AOF dir) and SIGSTOPped 5 s, against one real dispatcher and one
real worker. A *miss* is an event whose ``publish`` returned but whose effect never
appeared, or a run that did not end succeeded. Goal: 0 misses over every run.

There is no baseline to run beside it: the same scenario before the run ledger is the
one issue 10 describes (one customer never scored in each of two runs, audit clean).

Run: ``.venv/bin/python -m benchmarks.bench_chaos --runs 5`` (``--quick``: 1 run, 10 s).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks._common import bench_settings, embedded_redis, emit
from tests.reliability.chaos import run_chaos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="one run of 10 s")
    args = ap.parse_args()
    runs, seconds = (1, 10.0) if args.quick else (args.runs, args.seconds)
    results = []
    for i in range(runs):
        with embedded_redis() as server, tempfile.TemporaryDirectory() as tmp:
            res = run_chaos(bench_settings(server), server, Path(tmp), rate=args.rate,
                            seconds=seconds, tag=f"chaos{i}")
            results.append(res.as_dict())
    misses = [r["missing_effects"] + r["runs_failed"] + r["runs_in_flight"] for r in results]
    emit("chaos", {
        "runs": runs, "rate_per_s": args.rate, "seconds_each": seconds,
        "misses_per_run": misses, "misses_total": sum(misses),
        "accepted_total": sum(r["accepted"] for r in results),
        "redriven_total": sum(r["runs_redriven"] for r in results),
        "goal_zero_misses": {"value": sum(misses), "target": 0, "met": sum(misses) == 0},
        "details": results,
    })


if __name__ == "__main__":
    main()
