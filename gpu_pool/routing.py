"""Which Celery queue a task goes to. The one place that names queues.

A task declares its resource class (and, for GPU work, whether it is urgent or bulk);
``queue_for`` maps that to a queue. Nothing else in the code names queues by hand.
"""

from __future__ import annotations

from enum import StrEnum


class Resource(StrEnum):
    CPU = "cpu"
    """CPU-bound work (features, scoring small batches, SEO analysis)."""
    IO = "io"
    """Waiting on the network (LLM providers, S3, publishing)."""
    GPU = "gpu"
    """Needs a GPU now (embedding a changed document)."""
    GPU_BULK = "gpu-bulk"
    """Needs a GPU but may wait for the off-peak window (rescoring all, re-embed all)."""


QUEUES: dict[Resource, str] = {
    Resource.CPU: "cpu",
    Resource.IO: "io",
    Resource.GPU: "gpu",
    Resource.GPU_BULK: "gpu-batch",
}

ALL_QUEUES: tuple[str, ...] = ("cpu", "io", "gpu", "gpu-batch")
GPU_QUEUES: tuple[str, ...] = ("gpu", "gpu-batch")


def queue_for(resource: Resource) -> str:
    return QUEUES[resource]


TASK_RESOURCES: dict[str, Resource] = {}
"""Task name -> the resource it declared: filled by ``workers.kinds.task`` when a task
is declared, read by the starter (bulk GPU deferral), the deferral and status."""


def declare_task(task_name: str, resource: Resource) -> None:
    TASK_RESOURCES[task_name] = resource


def resource_of_task(task_name: str) -> Resource | None:
    """The resource a declared task (``@task(..., resource=)``) asked for; None if unknown."""
    return TASK_RESOURCES.get(task_name)
