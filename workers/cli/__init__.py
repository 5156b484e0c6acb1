"""The ``mesh`` command line: one entry point, one module per command group.

Each module in this package defines click commands and lists them in ``COMMANDS``;
``main`` picks them all up, so adding a command never edits this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from mesh.errors import MeshError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="worker-mesh", prog_name="mesh")
def cli() -> None:
    """Worker Mesh: event-driven AI workflows on Redis Streams and Celery.

    Settings come from MESH_* environment variables (`mesh settings` lists them).
    Without MESH_REDIS_URL, `mesh demo` starts its own redis-server.
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
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MeshError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
