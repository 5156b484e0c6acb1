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


def gpu_resource(*, urgent: bool) -> Resource:
    """The resource a GPU task declares: urgent work now (``gpu``), bulk work may wait
    for the off-peak window (``gpu-batch``)."""
    return Resource.GPU if urgent else Resource.GPU_BULK


def is_gpu(resource: Resource) -> bool:
    return resource in (Resource.GPU, Resource.GPU_BULK)


def resource_of_task(task_name: str) -> Resource | None:
    """The resource a declared task (``@task(..., resource=)``) asked for; None if unknown."""
    from workers.kinds import SPECS  # late: routing is imported by workers.kinds

    spec = SPECS.get(task_name)
    return spec.resource if spec else None
