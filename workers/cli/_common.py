"""Helpers shared by the CLI modules: settings, clients, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mesh.settings import MeshSettings

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def load_settings() -> MeshSettings:
    return MeshSettings.load()


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str, sort_keys=True)
    sys.stdout.write("\n")
