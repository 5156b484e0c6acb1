"""`mesh settings`: every setting with its environment name and current value."""

from __future__ import annotations

import click
from pydantic import SecretStr

from worker_mesh.workers.cli._common import emit_json, json_option, load_settings


@click.command("settings")
@json_option
def settings_cmd(as_json: bool) -> None:
    """List every MESH_* setting, its current value (secrets masked) and what it does."""
    s = load_settings(check_redis=False)
    rows = []
    for group_name in type(s).model_fields:
        group = getattr(s, group_name)
        for field_name, field in type(group).model_fields.items():
            value = getattr(group, field_name)
            shown = "**********" if isinstance(value, SecretStr) else value
            rows.append({"env": f"MESH_{group_name}_{field_name}".upper(), "value": shown,
                         "help": field.description or ""})
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['env']:<45} {r['value']}")
        if r["help"]:
            click.echo(f"    {' '.join(str(r['help']).split())}")


COMMANDS = [settings_cmd]
