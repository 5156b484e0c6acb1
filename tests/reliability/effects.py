"""Test-only workflow with an observable, idempotent effect, for the fault tests.

Loaded into workers and dispatchers with
``MESH_CELERY_EXTRA_MODULES=["tests.reliability.effects"]``.

``rel-effect`` runs for ``customer.activity`` events published by the producer
``reliability`` (so it never fires for anyone else's events). Its task writes the
effect the way the real workflows do, keyed by entity and event (``HSET effects
<event id> <run id>``: a second execution of the same run rewrites the same value), and
separately counts executions and distinct run ids, so a test can tell "ran twice, one
effect" (at-least-once delivery, idempotent write: fine) from "two runs" (a bug).

``rel-faults`` runs for ``content.deleted`` events of the producer ``reliability``:
``content:poison-*`` runs ``mesh.rel.poison`` (raises on every attempt until
``rel:fixed`` is set); ``content:chord-*`` runs a chord of three parts and a join, where
part 1 raises for ``content:chord-bad-*``.
"""

from __future__ import annotations

import time
from typing import Any

from celery import chord

from worker_mesh.chains.registry import REGISTRY, On, RunContext
from worker_mesh.events.base import Envelope
from worker_mesh.gpu_pool.routing import Resource
from worker_mesh.mesh.errors import PermanentError
from worker_mesh.workers.kinds import STANDARD, TaskKind, task

PRODUCER = "reliability"
QUICK = TaskKind("standard", max_retries=2, backoff_s=0.2, backoff_max_s=0.5)


def _ours(env: Envelope) -> bool:
    return env.producer == PRODUCER


@task("mesh.rel.effect", kind=STANDARD, resource=Resource.IO)
def effect(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> str:
    pause = float(event.get("sleep_s") or 0)
    if pause:
        rt.redis.hset(rt.keys.ns("rel", "started"), event["event_id"], meta["run_id"])
        time.sleep(pause)
    p = rt.redis.pipeline(transaction=True)
    p.hset(rt.keys.ns("rel", "effects"), event["event_id"], meta["run_id"])
    p.sadd(rt.keys.ns("rel", "runs"), meta["run_id"])
    p.incr(rt.keys.ns("rel", "executions"))
    p.execute()
    return str(meta["run_id"])


@task("mesh.rel.poison", kind=QUICK, resource=Resource.IO)
def poison(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> str:
    rt.redis.incr(rt.keys.ns("rel", "poison-attempts"))
    if not rt.redis.exists(rt.keys.ns("rel", "fixed")):
        raise RuntimeError(f"poison: cannot handle {event['key']} (attempt failed)")
    return effect(rt, meta, event)


@task("mesh.rel.part", kind=QUICK, resource=Resource.IO)
def part(rt: Any, meta: dict[str, Any], event: dict[str, Any], i: int) -> int:
    if i == 1 and event["key"].startswith("content:chord-bad-"):
        raise PermanentError(f"chord part {i} of {event['key']} failed")
    rt.redis.hset(rt.keys.ns("rel", "parts", event["event_id"]), str(i), meta["run_id"])
    return i


@task("mesh.rel.join", kind=QUICK, resource=Resource.IO)
def join(rt: Any, results: list[int], meta: dict[str, Any], event: dict[str, Any]) -> int:
    rt.redis.hset(rt.keys.ns("rel", "joined"), event["event_id"], sum(results))
    return sum(results)


def _build_faults(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    event = {"event_id": env.event_id, "key": env.entity_key}
    if env.entity_key.startswith("content:chord-"):
        parts = [ctx.sig("mesh.rel.part", ctx.meta, event, i, step=f"part{i}") for i in range(3)]
        return chord(parts, ctx.sig("mesh.rel.join", ctx.meta, event, step="join"))
    return ctx.sig("mesh.rel.poison", ctx.meta, event)


def _build(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    event = {"event_id": env.event_id, "key": env.entity_key}
    if env.entity_key.startswith("customer:slow-"):
        event["sleep_s"] = env.payload.logins_30d / 10  # type: ignore[attr-defined]
    name = "mesh.rel.poison" if env.entity_key.startswith("customer:poison-") else "mesh.rel.effect"
    return ctx.sig(name, ctx.meta, event)


if "rel-effect" not in REGISTRY.workflows:
    REGISTRY.workflow("rel-effect", on=[On("customer.activity", where=_ours)])(_build)
    REGISTRY.workflow("rel-faults", on=[On("content.deleted", where=lambda env: _ours(env) and not
                                            env.entity_key.startswith(("content:steps-",
                                                                       "content:backend-")))])(
        _build_faults)


# -- run-ledger probes (tests/reliability/test_fault_runs.py) ----------------------------
# ``content:steps-*``: a 3-step chain whose every step calls a local fake HTTP provider
# (URL in the Redis key ``rel:provider``), so a test counts the paid calls per step;
# step 3 fails for good until ``rel:fixed`` is set.
# ``content:backend-*``: one step whose result-backend write fails after it ran.

def _call_provider(rt: Any, step: str, event: dict[str, Any]) -> None:
    import httpx

    url = rt.redis.get(rt.keys.ns("rel", "provider"))
    httpx.post(f"{url.decode()}/{step}", json={"key": event["key"]}, timeout=5).raise_for_status()


@task("mesh.rel.step", kind=QUICK, resource=Resource.IO)
def step(rt: Any, previous: Any, meta: dict[str, Any], event: dict[str, Any], n: int) -> int:
    if n == 3 and not rt.redis.exists(rt.keys.ns("rel", "fixed")):
        raise PermanentError(f"step 3 of {event['key']} cannot run yet")
    _call_provider(rt, f"step{n}", event)
    return n


@task("mesh.rel.backend_write", kind=QUICK, resource=Resource.IO)
def backend_write(rt: Any, meta: dict[str, Any], event: dict[str, Any]) -> str:
    rt.redis.hset(rt.keys.ns("rel", "effects"), event["event_id"], meta["run_id"])
    return "applied"


def _build_steps(env: Envelope, ctx: RunContext):  # type: ignore[no-untyped-def]
    from celery import chain

    event = {"event_id": env.event_id, "key": env.entity_key}
    if env.entity_key.startswith("content:backend-"):
        return ctx.sig("mesh.rel.backend_write", ctx.meta, event, step="backend-fail")
    return chain(ctx.sig("mesh.rel.step", None, ctx.meta, event, 1, step="s1"),
                 *(ctx.sig("mesh.rel.step", ctx.meta, event, n, step=f"s{n}") for n in (2, 3)))


def _steps_event(env: Envelope) -> bool:
    return _ours(env) and env.entity_key.startswith(("content:steps-", "content:backend-"))


def _fail_backend_writes_of_probe_steps() -> None:
    """Make the result backend fail when it stores the success of a ``backend-fail`` step
    (after the function returned): the failure the run ledger must not take for a
    failed run."""
    from celery.backends.base import Backend

    original = Backend.mark_as_done
    if getattr(original, "_rel", False):
        return

    def mark_as_done(self: Any, task_id: str, *args: Any, **kwargs: Any) -> Any:
        if str(task_id).endswith(":backend-fail"):
            import redis as _redis

            raise _redis.ConnectionError("injected: result backend unreachable")
        return original(self, task_id, *args, **kwargs)

    mark_as_done._rel = True  # type: ignore[attr-defined]
    Backend.mark_as_done = mark_as_done  # type: ignore[method-assign]


_fail_backend_writes_of_probe_steps()

if "rel-steps" not in REGISTRY.workflows:
    REGISTRY.workflow("rel-steps", on=[On("content.deleted", where=_steps_event)])(_build_steps)
