"""A team-style step declaring a concurrency key (``tests/flow/test_step_flow.py``)."""

from __future__ import annotations

import time

from worker_mesh import Concurrency, Event, Flow, current_step, step, workflow


class JobQueued(Event):
    event_type = "test.job.queued"
    entity_kind = "job"
    entity_field = "job_id"
    job_id: str
    account: str


@step(flow=Flow(concurrency=(Concurrency("test.account", key=lambda a: a["job"]["account"],
                                         limit=1),)))
def work(job: dict) -> str:
    r, keys = current_step().runtime.redis, current_step().runtime.keys
    r.rpush(keys.ns("test", "spans", job["account"]), f"start:{time.time():.6f}")
    time.sleep(0.3)
    r.rpush(keys.ns("test", "spans", job["account"]), f"end:{time.time():.6f}")
    return job["job_id"]


@workflow("test-jobs", on=["test.job.queued"])
def run_job(job: JobQueued):
    return work.s(job.model_dump())
