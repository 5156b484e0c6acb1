"""`mesh exporter` (the mesh's shared state as Prometheus metrics) and `mesh flower`
(Flower against the mesh broker, with its key prefix and transport options)."""

from __future__ import annotations

import os
import signal
import threading

import click

from workers.cli._common import load_settings


@click.command("exporter")
@click.option("--port", type=int, default=None,
              help="Port of /metrics (default: monitoring.exporter_port).")
@click.option("--address", default="0.0.0.0", show_default=True)
def exporter_cmd(port: int | None, address: str) -> None:
    """Serve the mesh's state from Redis as Prometheus metrics: stream lag and pending,
    dead letters, queue depths, workers per queue, running tasks, workflow freshness
    against SLAs, result staleness, GPU backlog and off-peak windows. Read at each
    scrape; run one or two replicas per mesh (they are stateless)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from chains.loader import load_workflows
    from mesh.keys import Keys
    from mesh.redis_conn import make_client
    from monitoring import metrics
    from monitoring.collector import MeshCollector

    settings = load_settings()
    registry = load_workflows(settings)
    client = make_client(settings.redis)
    metrics.bind_store(client, Keys(settings.redis.key_prefix))
    reg = CollectorRegistry()
    workflows = sorted(registry.workflows.values(), key=lambda w: w.name)
    reg.register(MeshCollector(client, settings, lambda: workflows))
    port = port or settings.monitoring.exporter_port
    server, _thread = start_http_server(port, addr=address, registry=reg)
    click.echo(f"mesh exporter: /metrics on {address}:{port}", err=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


@click.command("flower", context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=None, help="Default: monitoring.flower_port.")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--basic-auth", default=None,
              help="user:password protecting the UI and API (or Flower's FLOWER_BASIC_AUTH).")
@click.option("--unauthenticated-api", is_flag=True,
              help="Allow /api without auth (local use and tests only).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower_cmd(port: int | None, address: str, basic_auth: str | None, unauthenticated_api: bool,
               flower_args: tuple[str, ...]) -> None:
    """Run Flower on the mesh's broker (its key prefix and transport options included;
    task events are on in every mesh worker). Extra arguments go to Flower."""
    from chains.loader import load_workflows
    from workers.app import create_app

    settings = load_settings()
    load_workflows(settings)
    app = create_app(settings)
    if unauthenticated_api:
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    argv = ["flower", f"--port={port or settings.monitoring.flower_port}",
            f"--address={address}", "--persistent=False"]
    if basic_auth:
        argv.append(f"--basic-auth={basic_auth}")
    app.start([*argv, *flower_args])


COMMANDS = [exporter_cmd, flower_cmd]
