"""What the demo sets up before any event flows (a first churn model)."""

from __future__ import annotations

from mesh.settings import MeshSettings


def prepare(settings: MeshSettings) -> list[str]:
    """Returns notes for the summary."""
    return []
