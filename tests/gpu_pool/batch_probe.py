"""Test-only GPU tasks for the real-worker batching tests, loaded into workers with
``MESH_CELERY_EXTRA_MODULES=["tests.gpu_pool.batch_probe"]``.

``mesh.test.gpu_echo`` is micro-batched like any GPU task (``run_batched``); its batch
function logs each forward pass to Redis and fails the whole pass when it contains the
text ``poison`` (a poisoned item). ``mesh.test.collect`` is the next step of each chain:
it records the result it was handed, so a test can see every chain continue with its
own result.
"""

from __future__ import annotations

import json
from typing import Any

from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.workers.kinds import CRITICAL, task
from worker_mesh.workers.tasks.gpu import run_batched


@task("mesh.test.gpu_echo", kind=CRITICAL, resource=Resource.GPU)
def gpu_echo(rt: Any, text: str) -> str:
    def forward(texts: list[str]) -> list[str]:
        rt.redis.rpush(rt.keys.ns("test", "passes"), json.dumps(texts))
        if "poison" in texts:
            raise RuntimeError("the forward pass blew up")
        return [t.upper() for t in texts]

    return run_batched(rt, "echo", forward, text)


@task("mesh.test.collect", kind=CRITICAL, resource=Resource.CPU)
def collect(rt: Any, result: Any, index: int) -> None:
    rt.redis.rpush(rt.keys.ns("test", "collected"), json.dumps([index, result]))
