"""`mesh demo`: the README's main job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings


@click.command("demo")
@click.option("--customers", default=300, show_default=True, help="Customers to generate.")
@click.option("--documents", default=24, show_default=True, help="Documents to write and edit.")
@click.option("--requests", "requests_", default=6, show_default=True,
              help="Content generation requests.")
@click.option("--timeout-s", default=600, show_default=True, help="Give up after this long.")
@click.option("--workdir", default=".mesh/demo", show_default=True, type=click.Path(path_type=Path),
              help="Logs of the demo's processes.")
@json_option
def demo_cmd(customers: int, documents: int, requests_: int, timeout_s: int, workdir: Path,
             as_json: bool) -> None:
    """Run the whole mesh on this machine on generated customers and content.

    Uses MESH_REDIS_URL when set (with a key prefix of its own); otherwise starts a
    redis-server on a free port with data under .mesh/redis. Starts a dispatcher and
    workers, publishes the events, shows progress, and prints per-workflow results.
    Exits non-zero when not every event was accounted for or a run failed.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.events.publisher import Publisher
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client
    from worker_mesh.workers.demo import prepare, report, scenario
    from worker_mesh.workers.demo.runner import Mesh, progress, quiet

    mesh = Mesh.up(load_settings(check_redis=False), workdir)
    s = mesh.settings
    registry = load_workflows(s)
    client = make_client(s.redis)
    t0 = time.monotonic()
    try:
        notes = prepare.prepare(s)
        mesh.start_processes()
        envs = list(scenario.events(customers, documents, requests_))
        Publisher(client, s.streams, Keys(s.redis.key_prefix)).publish_many(envs)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), disable=as_json or not sys.stderr.isatty(),
                      console=None) as bar:
            task = bar.add_task("events accounted", total=len(envs))
            stable_since = None
            while True:
                mesh.check_alive()
                p = progress(client, s)
                bar.update(task, total=p["published"], completed=p["accounted"],
                           description=f"events accounted, {p['queued'] + p['unacked']} tasks queued")
                if quiet(p):
                    stable_since = stable_since or time.monotonic()
                    if time.monotonic() - stable_since > 2.0:
                        break
                else:
                    stable_since = None
                if time.monotonic() - t0 > timeout_s:
                    raise click.ClickException(f"demo did not finish within {timeout_s}s: {p}")
                time.sleep(0.25)
        data = report.summary(client, s, registry, time.monotonic() - t0)
        data["notes"] = notes
    finally:
        mesh.down()
    if as_json:
        emit_json(data)
    else:
        report.render(data)
        for n in data["notes"]:
            click.echo(n)
    failures = sum(w["failures"] for w in data["workflows"])
    if failures:
        sys.exit(1)


COMMANDS = [demo_cmd]
