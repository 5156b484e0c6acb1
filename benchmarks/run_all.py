"""Run every benchmark module, one child process each, and print one JSON document.

``python -m benchmarks.run_all [--quick] [--only ingest,dispatch] [--timeout-s 900]``
(a ``bench_NAME`` module may be named ``NAME`` in ``--only``)

Every module in ``benchmarks/`` except the helpers (``_*``, ``probe``, ``run_all``) is a
benchmark: it prints JSON and writes ``benchmarks/results/<name>.json``. Each runs in a
fresh interpreter so one benchmark's process state (Celery apps, pools, imported models)
cannot bias another. The summary (each benchmark's result document, keyed by name, and
the failures) goes to stdout and to ``benchmarks/results/run_all.json``.
"""

from __future__ import annotations

import argparse
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks._common import RESULTS, ROOT, machine

HELPERS = {"probe", "run_all"}
TIMEOUTS_S = {"bench_ratelimit": 3600.0}
"""Modules that need more than the default per-module timeout (full size)."""
ORDER = ["ingest", "dispatch", "latency", "memory"]
"""The event bus's benchmarks first (cheapest first); others after, by name."""


def modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)
             if not m.name.startswith("_") and m.name not in HELPERS]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def supports_quick(name: str) -> bool:
    path = Path(benchmarks.__path__[0]) / f"{name}.py"
    return "--quick" in path.read_text(encoding="utf-8")


def run_one(name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    """Run one module; returns the result documents it wrote (by benchmark name)."""
    args = [sys.executable, "-m", f"benchmarks.{name}"]
    if quick and supports_quick(name):
        args.append("--quick")
    started = time.time()
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    docs: dict[str, Any] = {}
    for path in RESULTS.glob("*.json"):
        if path.name != "run_all.json" and path.stat().st_mtime >= started:
            docs[path.stem] = json.loads(path.read_text())
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-2000:], **docs}
    if not docs:
        return {"error": "wrote no result file", "stdout_tail": proc.stdout[-2000:]}
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark module and print one JSON document.")
    ap.add_argument("--quick", action="store_true", help="smoke-run sizes where a module supports it")
    ap.add_argument("--only", default="", help="comma-separated module names (default: all)")
    ap.add_argument("--timeout-s", type=float, default=None,
                    help="per module (default 900, more for the long ones: TIMEOUTS_S)")
    args = ap.parse_args(argv)
    names = modules()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        wanted = [f"bench_{n}" if n not in names and f"bench_{n}" in names else n
                  for n in wanted]  # `--only ratelimit` names benchmarks/bench_ratelimit.py
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(unknown)} (have: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    results: dict[str, Any] = {}
    failed: list[str] = []
    for name in names:
        print(f"running benchmarks.{name} ...", file=sys.stderr, flush=True)
        timeout_s = args.timeout_s or TIMEOUTS_S.get(name, 900.0)
        out = run_one(name, args.quick, timeout_s)
        if "error" in out:
            failed.append(name)
            results[name] = out
        else:
            results.update(out)
    summary = {"machine": machine(), "quick": args.quick, "modules": names, "failed": failed,
               "results": results}
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "run_all.json").write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
