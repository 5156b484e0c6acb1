"""What the demo sets up before any event flows (a first churn model)."""

from __future__ import annotations

from worker_mesh.mesh.settings import MeshSettings


def prepare(settings: MeshSettings) -> list[str]:
    """Train and promote a first churn model when none is; returns notes for the summary."""
    from worker_mesh.workers.churn.lifecycle import ensure_model

    return [ensure_model(settings)]
