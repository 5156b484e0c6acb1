"""The ``mesh`` command line: one entry point, one module per command group.

Each module in this package defines click commands and lists them in ``COMMANDS``;
``main`` picks them all up, so adding a command never edits this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

from worker_mesh.mesh.errors import MeshError
from worker_mesh.workers.cli._common import EXIT_CONFIG, EXIT_UNAVAILABLE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="worker-mesh", prog_name="mesh")
def cli() -> None:
    """Worker Mesh: event-driven AI workflows on Redis Streams and Celery.

    Settings come from MESH_* environment variables (`mesh settings` lists them).
    Without MESH_REDIS_URL, `mesh demo` starts its own redis-server.

    Exit codes: 0 ok; 1 a finding (audit mismatch, out of SLA, not found, unhealthy);
    2 bad usage or configuration; 3 Redis unreachable, credentials refused or TLS
    certificate untrusted (checked at start, one line, never a secret).
    """


def _load_commands() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        for cmd in getattr(module, "COMMANDS", []):
            cli.add_command(cmd)


_load_commands()


def main() -> None:
    """Run one command; every failure ends in one masked line and a documented exit
    code (``workers.cli._common``): 2 usage or configuration, 3 Redis unusable."""
    from worker_mesh.mesh import redact

    redact.install_logging()
    sys.excepthook = _masked_excepthook
    try:
        cli(standalone_mode=False, prog_name="mesh")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.message = redact.text(exc.message)  # type: ignore[misc]  # Final only in stubs
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        code, message = _classify(exc)
        if code is None:
            raise
        click.echo(f"error: {redact.text(message)}", err=True)
        sys.exit(code)


def _classify(exc: BaseException) -> tuple[int | None, str]:
    """(exit code, one line) of an expected failure; (None, "") for a bug."""
    import redis

    from worker_mesh.mesh.errors import AccessDenied, TransientError
    from worker_mesh.mesh.redis_conn import describe_error, is_refusal

    if isinstance(exc, (AccessDenied, TransientError)):
        return EXIT_UNAVAILABLE, str(exc)
    if isinstance(exc, MeshError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, redis.RedisError):  # a command without its own translation
        return EXIT_UNAVAILABLE, describe_error(exc) + (
            "" if is_refusal(exc) else " (Redis failed mid-command)")
    return None, ""


def _masked_excepthook(typ: type[BaseException], value: BaseException, tb: Any) -> None:
    """A bug's traceback still prints (it is needed), through the redaction point."""
    import traceback

    from worker_mesh.mesh import redact

    sys.stderr.write(redact.text("".join(traceback.format_exception(typ, value, tb))))
