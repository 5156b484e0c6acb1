"""A team's @step declares a concurrency key (``Flow(concurrency=...)``) and the task
wrapper enforces it across worker threads: never two running for the same account."""

from __future__ import annotations

import pytest

from tests.support.flow_steps import JobQueued
from worker_mesh.testing import Harness

pytestmark = pytest.mark.e2e


def test_a_steps_concurrency_key_is_enforced_by_the_wrapper(redis_server) -> None:  # type: ignore[no-untyped-def]
    with Harness(["tests.support.flow_steps"], server=redis_server, concurrency=4,
                 settings={"MESH_WORKFLOWS_BUILTIN": "false"}) as mesh:
        for i in range(4):
            mesh.publish(JobQueued(job_id=f"j{i}", account="acme"))
        assert mesh.wait_idle(90), mesh.logs()[-3000:]
        spans = [x.decode() for x in mesh.redis.lrange(mesh.keys.ns("test", "spans", "acme"), 0, -1)]
        assert len(spans) == 8
        # one at a time: the list alternates start, end, start, end...
        assert [s.split(":")[0] for s in spans] == ["start", "end"] * 4, spans
        assert mesh.ledger.counts()["test-jobs|succeeded"] == 4
