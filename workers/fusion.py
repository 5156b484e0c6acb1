"""Fused chains: the next step of a chain runs in the task that just finished, when a
hop to the broker would buy nothing.

A chain step costs a Celery hop: the next message is published, reserved, acknowledged,
its STARTED and SUCCESS states written, three task events sent - about twenty Redis
commands and most of a worker's time per step when the step itself is a few Redis
reads and a model call (docs/benchmarks.md, "Throughput"). When a step succeeds and the
chain's next step

* is a mesh task (``workers.kinds``) known to this worker,
* goes to the same queue the finished step came from,
* is a plain task (no group or chord: no fan-out), with no delay (countdown, eta), and
  the run is not a member of a group or chord,

the wrapper runs it right here (``throughput.fuse_chains``, at most
``throughput.fuse_max_steps`` in a row) through the same task wrapper as a delivered
message: the ledger's ``begin``/``step_done`` for its own step (so it is memoized, and a
re-driven run skips it), its own metrics (``mesh_task_*`` under its own task name, plus
``mesh_fused_steps_total``), its own result under its own task id. The rest of the chain
continues from the last fused step's result.

A fused step that fails is handed back to Celery: it is sent as its own task message
(with the kind's first retry delay for a transient error), where its own retries,
error callback and dead letter apply as if it had never been fused. So fusing never
changes what a step's failure does; it costs at most one extra attempt.

Not fused, on purpose: steps on another queue (the GPU's ``embed`` after the CPU's
``plan``), fan-out, and a step's re-delivery after a memoized success (Celery
continues the chain as usual).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import signature
from celery.exceptions import Ignore
from celery.states import SUCCESS

from worker_mesh.monitoring import metrics

if TYPE_CHECKING:
    from celery import Celery, Task
    from celery.canvas import Signature

log = logging.getLogger(__name__)

_DELAYS = ("countdown", "eta", "expires")


@dataclass
class _Failed:
    exc: BaseException
    countdown_s: float


def fuse_next(task: Task, rt: Any, result: Any) -> None:
    """After ``task`` succeeded with ``result``: run the chain's following steps here
    while they qualify (see the module docstring). Rewrites the request's remaining
    chain so that Celery sends only what was not run, with the right argument. Never
    raises: on any surprise the chain is left as Celery would send it."""
    settings = rt.settings.throughput
    req = task.request
    chain = getattr(req, "chain", None)
    if not settings.fuse_chains or not chain or req.group or req.chord:
        return
    try:
        rest = _fuse(task, list(chain), result, settings.fuse_max_steps - 1)
    except Exception as exc:  # steps already run are memoized: re-sent, they return at once
        log.warning("chain fusion after %s stopped (%s); the chain continues as messages",
                    task.name, type(exc).__name__)
        return
    chain[:] = rest


def _fuse(task: Task, chain: list[Any], result: Any, max_steps: int) -> list[Any]:
    queue = _queue_of_request(task)
    fused = 0
    while chain and fused < max_steps:
        sig = signature(chain[-1], app=task.app)
        if not _fusable(task.app, sig, queue) or not _plain_or_none(chain[:-1]):
            break
        chain.pop()
        args = tuple(sig.args) if sig.immutable else (result, *sig.args)
        out = _run_inline(task, sig, args, dict(sig.kwargs), queue)
        if out is Ignore:
            return []  # the run ended (cancelled, failed): later steps do not start
        if isinstance(out, _Failed):
            return [*chain, _frozen(sig, args, out.countdown_s)]
        result = out
        fused += 1
    if fused and chain:
        nxt = signature(chain[-1], app=task.app)
        chain[-1] = _frozen(nxt, tuple(nxt.args) if nxt.immutable else (result, *nxt.args), 0)
    return chain


def _queue_of_request(task: Task) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or getattr(task, "queue", None) or "")


def _fusable(app: Celery, sig: Signature, queue: str) -> bool:
    if type(sig).__name__ != "Signature" or sig.subtask_type:
        return False
    target = app.tasks.get(str(sig.task))
    if target is None or not getattr(target, "mesh_kind", None):
        return False
    if any(sig.options.get(k) for k in _DELAYS) or sig.options.get("link"):
        return False
    return str(sig.options.get("queue") or getattr(target, "queue", "")) == queue


def _plain_or_none(rest: list[Any]) -> bool:
    """The step after a fused one must be a plain task (its argument is then frozen in),
    or there must be none."""
    return not rest or not (rest[-1] or {}).get("subtask_type")


def _frozen(sig: Signature, args: tuple[Any, ...], countdown_s: float) -> dict[str, Any]:
    """The step as a message of its own, its argument already in (immutable)."""
    options = {k: v for k, v in sig.options.items() if k != "immutable"}
    if countdown_s > 0:
        options["countdown"] = countdown_s
    return dict(signature(str(sig.task), args=args, kwargs=dict(sig.kwargs), options=options,
                          immutable=True, app=sig._app))


def _run_inline(parent: Task, sig: Signature, args: tuple[Any, ...], kwargs: dict[str, Any],
                queue: str) -> Any:
    """Run one step through its own task wrapper, as if delivered: its result, or
    ``Ignore`` (the run ended), or ``_Failed`` (hand it back to Celery)."""
    task = parent.app.tasks[str(sig.task)]
    task_id = sig.options.get("task_id")
    preq = parent.request
    task.push_request(
        id=task_id, args=list(args), kwargs=kwargs, retries=0, called_directly=True,
        is_eager=False, delivery_info=preq.delivery_info, headers=sig.options.get("headers"),
        root_id=preq.root_id or preq.id, parent_id=preq.id, chain=None, callbacks=None,
        errbacks=None, group=None, group_index=None, chord=None, reply_to=None,
    )
    workflow = (sig.options.get("headers") or {}).get("mesh_workflow")
    metrics.task_started(queue)
    t0 = time.monotonic()
    outcome = "succeeded"
    try:
        value = task.run(*args, **kwargs)
    except Ignore:
        outcome = "failed"
        return Ignore
    except Exception as exc:
        outcome = "retried"
        return _Failed(exc, _first_delay(task, exc))
    finally:
        task.pop_request()
        metrics.task_finished(task.name, queue, time.monotonic() - t0, outcome, workflow)
    metrics.step_fused(task.name)
    if task_id:
        _store(task, str(task_id), value)
    return value


def _store(task: Task, task_id: str, value: Any) -> None:
    """The step's result under its own task id, as Celery would store it, in one write:
    Celery's ``store_result`` first reads the key back (not to overwrite a SUCCESS),
    two round trips a fused step does not need (it just ran; nothing else wrote it)."""
    backend = task.backend
    try:
        meta = backend._get_result_meta(result=value, state=SUCCESS, traceback=None,
                                        request=None)
        meta["task_id"] = task_id
        backend._set_with_state(backend.get_key_for_task(task_id), backend.encode(meta), SUCCESS)
    except AttributeError:  # another backend: the public, slower way
        backend.mark_as_done(task_id, value, None, True, state=SUCCESS)
    except Exception as exc:  # the ledger holds the result; the backend copy is a view
        log.warning("storing the result of fused step %s failed (%s)", task_id,
                    type(exc).__name__)


def _first_delay(task: Task, exc: BaseException) -> float:
    from worker_mesh.mesh.errors import PermanentError, TransientError
    from worker_mesh.workers.kinds import KINDS

    if isinstance(exc, PermanentError):
        return 0.0
    kind = KINDS.get(str(getattr(task, "mesh_kind", "")))
    if kind is None:
        return 0.0
    return kind.delay_s(0, exc.delay_s if isinstance(exc, TransientError) else None)


def install() -> None:
    """Register the fusion hook with the task wrapper (idempotent)."""
    from worker_mesh.workers.kinds import AFTER_SUCCESS

    if fuse_next not in AFTER_SUCCESS:
        AFTER_SUCCESS.append(fuse_next)



