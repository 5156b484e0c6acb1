"""The beat schedule: periodic work, from settings. Workflows add entries here."""

from __future__ import annotations

from typing import Any

from worker_mesh.mesh.settings import MeshSettings

# name -> function(settings) -> beat entry. Workflow modules add to it.
SCHEDULE_BUILDERS: dict[str, Any] = {}


def beat_schedule(settings: MeshSettings) -> dict[str, dict[str, Any]]:
    return {name: build(settings) for name, build in SCHEDULE_BUILDERS.items()}
