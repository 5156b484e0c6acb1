"""`mesh health` and `mesh drain`: the pod lifecycle hooks of the Kubernetes manifests.

``mesh health --component C`` is the readiness probe: exit 0 only when Redis (broker,
streams, results) answers with this process's own settings and, for a worker given
``--node-prefix``, when this pod's Celery node answers a control ping. So a worker that
cannot reach the broker is not ready.

``mesh health --component C --live`` is the liveness probe. It must not depend on Redis
alone (a Redis outage would otherwise restart every pod of the mesh at once): it fails
only when the main process is gone or stopped, or, for a worker with ``--node-prefix``,
when the broker answers but the worker does not (it is hung).

``mesh drain`` is the workers' preStop hook: cancel the consumers of the pod's queues,
then wait until the node has no active task, so the SIGTERM that follows is a warm
shutdown with nothing in hand. Nodes are named ``<prefix>@<pod name>`` (``mesh worker
--name <prefix>@$(POD_NAME)``; a pod's hostname is its name).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from worker_mesh.mesh.errors import BrokerUnavailable, MeshError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.cli._common import load_settings

COMPONENTS = ("dispatcher", "worker", "beat", "flower", "exporter", "autoscaler")


def node_name(prefix: str) -> str:
    return f"{prefix}@{socket.gethostname()}"


def control_app(settings: MeshSettings) -> Any:
    """A Celery app with the mesh's broker settings and no tasks: enough for control
    commands, and cheap (a probe runs every few seconds; it must not load models)."""
    from celery import Celery

    from worker_mesh.workers.app import celery_config

    app = Celery("mesh-probe", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def process_running(pid: int = 1) -> tuple[bool, str]:
    """Whether ``pid`` exists and is neither a zombie nor stopped (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False, f"process {pid} not found"
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X", "T", "t"):
        return False, f"process {pid} is in state {state}"
    return True, f"process {pid} in state {state}"


def ping_node(settings: MeshSettings, node: str, timeout_s: float) -> bool:
    app = control_app(settings)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout_s) or []
    finally:
        app.close()
    return any(node in r for r in replies)


def _fail(message: str) -> None:
    click.echo(f"unhealthy: {message}", err=True)
    sys.exit(1)


@click.command("health")
@click.option("--component", type=click.Choice(COMPONENTS), required=True)
@click.option("--live", is_flag=True, help="Liveness (default: readiness).")
@click.option("--node-prefix", default=None,
              help="Worker node name prefix; the node is <prefix>@<hostname>.")
@click.option("--timeout-s", type=float, default=5.0, show_default=True,
              help="How long to wait for the worker's control reply.")
def health_cmd(component: str, live: bool, node_prefix: str | None, timeout_s: float) -> None:
    """Probe for Kubernetes: exit 0 when healthy, 1 (with the reason on stderr) when not."""
    from worker_mesh.mesh.redis_conn import check_connection

    settings = load_settings(check_redis=False)  # a probe answers 1 with the reason itself
    if live:
        ok, why = process_running()
        if not ok:
            _fail(why)
        if component == "worker" and node_prefix:
            try:
                check_connection(settings.redis, "broker")
            except BrokerUnavailable:
                click.echo("alive: broker unreachable, not the worker's fault")
                return
            except MeshError as exc:
                _fail(str(exc))
            if not ping_node(settings, node_name(node_prefix), timeout_s):
                _fail(f"broker reachable but {node_name(node_prefix)} does not answer (hung)")
        click.echo(f"alive: {why}")
        return
    try:
        check_connection(settings.redis, "broker")
    except MeshError as exc:
        _fail(str(exc))
    if component == "worker" and node_prefix and not ping_node(
            settings, node_name(node_prefix), timeout_s):
        _fail(f"{node_name(node_prefix)} does not answer a control ping")
    click.echo(f"ready: {component}")


@click.command("drain")
@click.option("--queues", "-Q", required=True, help="Comma-separated queues this pod consumes.")
@click.option("--node-prefix", required=True, help="The node is <prefix>@<hostname>.")
@click.option("--max-wait-s", type=float, default=None,
              help="Give up waiting after this long (default: celery.task_time_limit_s + 30).")
@click.option("--poll-s", type=float, default=5.0, show_default=True)
def drain_cmd(queues: str, node_prefix: str, max_wait_s: float | None, poll_s: float) -> None:
    """preStop hook: stop consuming, wait until no task is active. Always exits 0 (a hook
    that fails only gets the pod killed sooner; SIGTERM's warm shutdown still follows)."""
    settings = load_settings(check_redis=False)  # a hook never fails the pod
    node = node_name(node_prefix)
    deadline = time.monotonic() + (max_wait_s if max_wait_s is not None
                                   else settings.celery.task_time_limit_s + 30)
    app = control_app(settings)
    try:
        for queue in [q.strip() for q in queues.split(",") if q.strip()]:
            app.control.cancel_consumer(queue, destination=[node], reply=True, timeout=poll_s)
            click.echo(f"drain: {node} stopped consuming {queue}")
        while time.monotonic() < deadline:
            # No reply (a worker blocked in a long call, or a solo pool mid-task) is busy.
            active = app.control.inspect(destination=[node], timeout=poll_s).active()
            if active is not None and not active.get(node):
                click.echo(f"drain: {node} has no active task")
                return
            time.sleep(poll_s)
        click.echo(f"drain: {node} still busy at the deadline; SIGTERM's warm shutdown follows")
    except Exception as exc:  # a hook must never crash-loop the pod; say why and move on
        click.echo(f"drain: {type(exc).__name__}: {exc}", err=True)
    finally:
        app.close()


COMMANDS = [health_cmd, drain_cmd]
