"""`mesh worker` and `mesh beat`: the Celery processes of the mesh."""

from __future__ import annotations

import os
import socket

import click

from worker_mesh.gpu_pool.routing import ALL_QUEUES
from worker_mesh.workers.cli._common import load_settings


def _app():  # type: ignore[no-untyped-def]
    # Checked first (exit 3 with the reason): Celery alone would retry refused
    # credentials or an untrusted certificate forever.
    settings = load_settings()
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.workers.app import create_app

    load_workflows(settings)
    return create_app(settings)


@click.command("worker")
@click.option("--queues", "-Q", default=",".join(ALL_QUEUES), show_default=True,
              help="Comma-separated queues to consume (cpu, io, gpu, gpu-batch).")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes/threads (default: celery.worker_concurrency).")
@click.option("--pool", "-P", type=click.Choice(["prefork", "solo", "threads"]), default="prefork",
              show_default=True, help="solo for GPU workers: one process owns the model.")
@click.option("--name", "-n", default=None, help="Node name (default: mesh-<pid>@<host>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def worker_cmd(queues: str, concurrency: int | None, pool: str, name: str | None,
               loglevel: str) -> None:
    """Run a Celery worker for the given queues. SIGTERM drains: tasks in hand finish,
    nothing new is taken, then it exits."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(ALL_QUEUES))
    if unknown:
        raise click.BadParameter(f"unknown queue(s): {', '.join(unknown)}", param_hint="--queues")
    _enable_worker_metrics(pool)
    app = _app()
    argv = [
        "worker", "-Q", ",".join(wanted), "-l", loglevel, "-P", pool, "-E",
        "--without-gossip", "--without-mingle",
        "-n", name or f"mesh-{os.getpid()}@{socket.gethostname()}",
    ]
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main(argv)


def _enable_worker_metrics(pool: str) -> None:
    """Prefork children write metrics to shared files, summed by the parent's /metrics
    (monitoring.multiproc); must happen before the app is built and the pool forks."""
    from worker_mesh.monitoring import multiproc

    if pool == "prefork":
        multiproc.enable(load_settings(check_redis=False).monitoring.multiproc_dir)


@click.command("beat")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def beat_cmd(loglevel: str) -> None:
    """Run the scheduler (exactly one per mesh): retraining and other periodic work."""
    app = _app()
    from worker_mesh.workers.schedule import beat_schedule

    app.conf.beat_schedule = beat_schedule(app.mesh_settings)
    app.Beat(loglevel=loglevel).run()


COMMANDS = [worker_cmd, beat_cmd]
