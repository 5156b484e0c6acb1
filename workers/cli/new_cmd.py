"""`mesh new workflow NAME`: scaffold a team's workflow package."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("new")
def new_group() -> None:
    """Create things from templates."""


@new_group.command("workflow")
@click.argument("name")
@click.option("--dir", "into", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Where to create the package directory NAME.")
def new_workflow(name: str, into: Path) -> None:
    """Create the package NAME: an event type, two steps, a workflow, a README, a
    pyproject.toml registering it with the mesh (entry point worker_mesh.workflows),
    and a test that passes as generated (`cd NAME && pytest`)."""
    from worker_mesh.workers.scaffold import scaffold

    root = scaffold(name, into)
    click.echo(f"created {root}")
    click.echo(f"next: cd {root} && pytest   (needs redis-server on the PATH)")


COMMANDS = [new_group]
