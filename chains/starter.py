"""Starting workflow runs as Celery canvases (the dispatcher's ``WorkflowStarter``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chains.registry import RunContext, WorkflowRegistry
from events.base import Envelope

if TYPE_CHECKING:
    from celery import Celery


@dataclass(frozen=True)
class StartRequest:
    workflow: str
    env: Envelope
    run_id: str
    coalesced: int = 1


class CeleryStarter:
    """Builds each run's canvas from its event and hands it to the broker."""

    def __init__(self, app: Celery, registry: WorkflowRegistry) -> None:
        self.app = app
        self.registry = registry

    def run_id(self, workflow: str, env: Envelope) -> str:
        return self.registry.get(workflow).run_id(env)

    def start(self, req: StartRequest) -> None:
        wf = self.registry.get(req.workflow)
        ctx = RunContext(self.app, req.run_id, wf.name, wf.version, req.coalesced)
        canvas = wf.build(req.env, ctx)
        canvas.apply_async()

    def start_many(self, reqs: list[StartRequest]) -> None:
        for req in reqs:
            self.start(req)
