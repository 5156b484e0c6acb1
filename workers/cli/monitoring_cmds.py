"""`mesh exporter` (the mesh's shared state as Prometheus metrics) and `mesh flower`
(Flower against the mesh broker, with its key prefix and transport options)."""

from __future__ import annotations

import os
import signal
import threading

import click

from worker_mesh.mesh.errors import ConfigError
from worker_mesh.workers.cli._common import load_settings


@click.command("exporter")
@click.option("--port", type=int, default=None,
              help="Port of /metrics (default: monitoring.exporter_port).")
@click.option("--address", default=None,
              help="Listen address (default: monitoring.metrics_address, 127.0.0.1; "
                   "0.0.0.0 in a pod).")
def exporter_cmd(port: int | None, address: str | None) -> None:
    """Serve the mesh's state from Redis as Prometheus metrics: stream lag and pending,
    dead letters, queue depths, workers per queue, running tasks, workflow freshness
    against SLAs, result staleness, GPU backlog and off-peak windows. Read at each
    scrape; run one or two replicas per mesh (they are stateless). Checks Redis at
    start (exit 3 with the reason); later outages show as scrape errors, logged once
    per change of state."""
    import logging

    settings = load_settings()  # Redis checked first: exit 3 with the reason
    from prometheus_client import CollectorRegistry, start_http_server

    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.mesh.keys import Keys
    from worker_mesh.mesh.redis_conn import make_client
    from worker_mesh.monitoring import metrics
    from worker_mesh.monitoring.collector import MeshCollector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry = load_workflows(settings)
    client = make_client(settings.redis)
    metrics.bind_store(client, Keys(settings.redis.key_prefix))
    reg = CollectorRegistry()
    workflows = sorted(registry.workflows.values(), key=lambda w: w.name)
    reg.register(MeshCollector(client, settings, lambda: workflows))
    port = port or settings.monitoring.exporter_port
    address = address or settings.monitoring.metrics_address
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
@click.option("--no-auth", is_flag=True,
              help="Run without authentication (UI, API and /metrics open): local use only.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower_cmd(port: int | None, address: str, no_auth: bool, flower_args: tuple[str, ...]) -> None:
    """Run Flower on the mesh's broker (its key prefix and transport options included;
    task events are on in every mesh worker). Extra arguments go to Flower.

    Closed by default: the UI, the API and /metrics need the basic-auth credentials of
    MESH_MONITORING_FLOWER_BASIC_AUTH (user:password[,user:password]) or
    MESH_MONITORING_FLOWER_BASIC_AUTH_FILE (user:password lines); without them it exits 2
    unless --no-auth. Credentials on the command line (--basic_auth...) are refused:
    ps shows them to every local user."""
    from worker_mesh.monitoring import flower

    flower.refuse_secret_options(flower_args)
    settings = load_settings()  # Redis checked first: exit 3 with the reason
    from worker_mesh.chains.loader import load_workflows
    from worker_mesh.workers.app import create_app

    pairs = [] if no_auth else flower.credentials(settings.monitoring)
    if not pairs and not no_auth:
        raise ConfigError("mesh flower needs credentials: set MESH_MONITORING_FLOWER_BASIC_AUTH "
                          "or MESH_MONITORING_FLOWER_BASIC_AUTH_FILE (or pass --no-auth for "
                          "local use)")
    if no_auth:
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    load_workflows(settings)
    app = create_app(settings)
    port = port or settings.monitoring.flower_port
    click.echo(flower.describe(pairs, address, port), err=True)
    flower.start(app, port, address, pairs, flower_args)


COMMANDS = [exporter_cmd, flower_cmd]
