"""`mesh bench`: run the measured benchmarks (benchmarks/ in a source checkout)."""

from __future__ import annotations

import subprocess
import sys

import click

from worker_mesh.workers.procs import ROOT, child_env


@click.command("bench", context_settings={"ignore_unknown_options": True})
@click.option("--quick", is_flag=True, help="Fewer repeats and smaller data (minutes, not tens).")
@click.option("--only", default=None,
              help="Comma-separated benchmark names, e.g. ingest,dispatch,ratelimit.")
def bench_cmd(quick: bool, only: str | None) -> None:
    """Run the benchmarks: each prints JSON with its median, the baseline measured in
    the same run and their ratio, and writes benchmarks/results/<name>.json.
    Needs the source checkout (benchmarks/ is not installed as a package)."""
    if not (ROOT / "benchmarks" / "run_all.py").exists():
        raise click.ClickException(f"benchmarks/ not found under {ROOT}: run from a source checkout")
    from worker_mesh.workers.cli._common import load_settings

    args = [sys.executable, "-m", "benchmarks.run_all"]
    if quick:
        args.append("--quick")
    if only:
        args += ["--only", only]
    env = child_env(load_settings(check_redis=False))
    sys.exit(subprocess.call(args, cwd=ROOT, env=env))


COMMANDS = [bench_cmd]
