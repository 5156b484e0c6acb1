"""Helpers shared by the CLI modules: settings (checked against Redis), exit codes,
JSON output (masked by ``mesh.redact``).

Exit codes of every ``mesh`` command (README, docs/security.md):

==  ===========================================================================
0   ok
1   a finding: ``mesh audit`` mismatch, ``mesh status`` out of SLA, an id that was
    not found, ``mesh health`` unhealthy (the probe contract)
2   bad usage or configuration: an unknown option or setting, a malformed value or
    ``MESH_REDIS_URL``, Flower without credentials
3   Redis cannot be used: unreachable (after ``redis.startup_timeout_s``), refused
    credentials or a missing ACL permission, an untrusted TLS certificate
==  ===========================================================================
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker_mesh.mesh import redact
from worker_mesh.mesh.settings import MeshSettings

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")

_checked: set[str] = set()


def load_settings(check_redis: bool = True) -> MeshSettings:
    """The settings of this command, and (unless ``check_redis`` is False: commands
    that never touch Redis) a start-up check of Redis: reachable, credentials accepted,
    TLS certificate trusted. A failure raises ``ConfigError`` / ``AccessDenied`` /
    ``BrokerUnavailable`` with one readable line, which ``main`` turns into exit 2 or 3
    within ``redis.startup_timeout_s`` (plus the connect timeout) - never a retry loop,
    a traceback or a secret. Checked once per process."""
    settings = MeshSettings.load()
    if check_redis:
        from worker_mesh.mesh.redis_conn import check_at_start, redis_url

        url = redis_url(settings.redis)
        if url not in _checked:
            check_at_start(settings.redis, _command_path())
            _checked.add(url)
    return settings


def _command_path() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.command_path if ctx is not None else "mesh"


def emit_json(data: Any) -> None:
    text = json.dumps(data, indent=2, default=str, sort_keys=True)
    sys.stdout.write(redact.text(text) + "\n")


def echo(message: str, *, err: bool = False) -> None:
    """``click.echo`` through the redaction point (for lines that carry data from
    Redis or a provider, e.g. dead-letter reasons)."""
    click.echo(redact.text(message), err=err)
