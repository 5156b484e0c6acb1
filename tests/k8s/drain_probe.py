"""Test-only task for the preStop drain test, loaded into a real worker with
``MESH_CELERY_EXTRA_MODULES=["tests.k8s.drain_probe"]``.

``mesh.test.k8s.hold`` records that it started, then holds its worker slot until the test
sets the Redis key ``k8s:release`` (a long task, without sleeping for a fixed time), then
records that it finished.
"""

from __future__ import annotations

import time
from typing import Any

from worker_mesh.workers.kinds import STANDARD, task


@task("mesh.test.k8s.hold", kind=STANDARD)
def hold(rt: Any, tag: str) -> str:
    rt.redis.rpush(rt.keys.ns("k8s", "started"), tag)
    deadline = time.monotonic() + 120
    while not rt.redis.exists(rt.keys.ns("k8s", "release")) and time.monotonic() < deadline:
        time.sleep(0.1)
    rt.redis.rpush(rt.keys.ns("k8s", "finished"), tag)
    return tag
