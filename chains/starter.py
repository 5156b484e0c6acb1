"""Starting workflow runs as Celery canvases (the dispatcher's ``WorkflowStarter``).

Before a run's messages are sent, the run is recorded in the run ledger
(``mesh.runs``) with its steps, its last step and its canvas as JSON: from then on the
ledger, not Celery's visibility timeout, guarantees that the run ends in exactly one
outcome. A run whose messages are lost is re-sent from that canvas by the re-driver
(``resend``), with the same task ids, so the steps that already succeeded return their
memoized results instead of running again.

Every run's canvas gets:

* a deterministic task id ``<run_id>:<step>`` on every task (a task the builder left
  without one gets ``<run_id>:<task short name>-<i>``): the ledger's step identity;
* ``mesh.dlq.workflow_failed`` as the error callback of every task, so a run whose task
  finally fails (after its retries) ends failed and dead-letters the event that started
  it, with the step and the error, ready to be replayed once fixed;
* when the run does not end in a mesh task (it ends in a group, a chord, or a plain
  Celery task), the bookkeeping task ``mesh.run.finished`` as its last link (task id
  ``<run_id>:finished``), whose success is the run's success. A run ending in a mesh
  task is ended by that task's own step record: no second task per run.

The messages the dispatcher sends are made cheap to build: a short ``argsrepr``
(``run <run_id>``: no event fields in Flower or the logs), no per-message queue
declaration (``declare=[]``: on the Redis transport a queue needs none, see
``_sending``), and no ``task-sent`` event (Flower and the metrics see each task from
the worker's own received/started/succeeded events; starts are counted by the
dispatcher's outcomes and ``mesh_workflow_runs_total{outcome="started"}``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from celery.canvas import Signature

from worker_mesh.chains.registry import RunContext, WorkflowRegistry
from worker_mesh.events.base import Envelope
from worker_mesh.events.routing import StartRequest
from worker_mesh.events.wire import encode
from worker_mesh.mesh.errors import BrokerUnavailable, PermanentError
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import FINISHED_TASK, RunLedger, RunRecord, StepInfo, split_task_id
from worker_mesh.monitoring import metrics

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["CeleryStarter", "StartRequest"]

log = logging.getLogger("mesh.starter")

FAILED_TASK = "mesh.dlq.workflow_failed"


class CeleryStarter:
    """Builds each run's canvas from its event and hands it to the broker."""

    def __init__(self, app: Celery, registry: WorkflowRegistry, *, max_payload_bytes: int = 1 << 20,
                 fire_and_forget: bool = True, batch_publish: bool = True,
                 batch_max_messages: int = 2000, sent_events: bool = False,
                 ledger: RunLedger | None = None) -> None:
        self.app = app
        self.sent_events = sent_events
        """Send Celery's ``task-sent`` event for the runs' first tasks (off: they cost
        a tenth of a start, and nothing in the mesh reads them)."""
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.batch_max_messages = batch_max_messages
        self.batch_publish = batch_publish
        self._batch_checked = False
        if batch_publish:
            # kombu buffers a producer's publishes in one Redis pipeline only when a
            # timed-out pipeline is never retried (a retry could send a message twice).
            # Runs are idempotent by design (deterministic task ids, at-least-once),
            # and an unsent batch is resent whole because its entries stay unacked.
            opts = dict(app.conf.broker_transport_options or {})
            if opts.pop("retry_on_timeout", None) is not None:
                app.conf.broker_transport_options = opts
        self.fire_and_forget = fire_and_forget
        self._deferral: Any = None
        self._ledger = ledger

    @property
    def ledger(self) -> RunLedger:
        if self._ledger is None:
            from worker_mesh.mesh.redis_conn import make_client

            s = self.app.mesh_settings  # type: ignore[attr-defined]
            self._ledger = RunLedger(make_client(s.redis), Keys(s.redis.key_prefix), s.runs)
        return self._ledger

    def run_id(self, workflow: str, env: Envelope, attempt: str = "") -> str:
        return self.registry.get(workflow).run_id(env, attempt)

    def canvas(self, req: StartRequest) -> Signature:
        return self.prepare(req)[0]

    def prepare(self, req: StartRequest) -> tuple[Signature, RunRecord]:
        """The run's full canvas (the workflow's own, with step ids, the dead-letter
        error callback on every task and, unless it ends in a mesh task,
        ``mesh.run.finished``) and its ledger record."""
        wf = self.registry.get(req.workflow)
        ctx = RunContext(self.app, req.run_id, wf.name, wf.version, req.coalesced, req.env.type,
                         req.env.event_id)
        started_at = time.time()
        body = as_canvas(wf.build(req.env, ctx), wf.name)
        _bind_app(body, self.app)  # signatures made without an app (``step.s()``)
        fields = req.fields if req.fields is not None else encode(req.env, self.max_payload_bytes)
        errback = self.app.signature(FAILED_TASK, args=(ctx.meta, fields, started_at))
        _step_ids(body, req.run_id)
        self._check_registered(body, wf.name)
        _with_headers(body, ctx.headers)
        _link_error_everywhere(body, errback)
        _short_reprs(body, f"run {req.run_id}")
        last = _last_task(body)
        if last is None or not self._is_mesh_task(last.task):
            finished = self.app.signature(FINISHED_TASK, args=(ctx.meta, started_at),
                                          task_id=f"{req.run_id}:finished", immutable=True)
            finished.link_error(errback)
            _short_reprs(finished, f"run {req.run_id}")
            _with_headers(finished, ctx.headers)
            body = body | finished
            last = finished
        from kombu.utils.json import dumps

        steps = [StepInfo(_step_of(t), t.task, self._kind(t.task)) for t in _plain_tasks(body)]
        record = RunRecord(
            run_id=req.run_id, workflow=wf.name, version=wf.version, event_id=req.env.event_id,
            event_type=req.env.type, entity=req.env.entity_key or "", steps=steps,
            last=_step_of(last), canvas=dumps(body), resume_of=req.resume_of,
            attrs={"fields": dumps(fields), "coalesced": str(req.coalesced)})
        return body, record

    def _check_registered(self, canvas: Signature, workflow: str) -> None:
        """Every task of the run must be known to this mesh's app (declared with
        ``@step``/``@task``, or a Celery ``@shared_task``, in a loaded module): a typo or
        a module left out fails the build, naming the workflow and the task, instead of
        a worker discarding the message."""
        for t in _plain_tasks(canvas):
            if t.task not in self.app.tasks:
                raise LookupError(
                    f"workflow {workflow!r} uses task {t.task!r}, which is not registered "
                    "(declare it with @step, or list its module in MESH_CELERY_EXTRA_MODULES "
                    "or the worker_mesh.workflows entry point)")

    def _is_mesh_task(self, task_name: str) -> bool:
        """Whether ``task_name`` is a mesh task (bound by ``workers.kinds``), whose
        wrapper records its step in the ledger; any other task (unknown to this
        process, or a plain Celery task) gets ``mesh.run.finished`` after it."""
        return self._kind(task_name) != ""

    def _kind(self, task_name: str) -> str:
        task = self.app.tasks.get(task_name)
        return str(getattr(task, "mesh_kind", "") or "") if task is not None else ""

    def resend(self, run_id: str, canvas: str) -> None:
        """The re-driver's hand-off: send a recorded canvas again, same task ids (steps
        that succeeded return their memoized result). Chords get fresh group ids, so
        their part counters start from zero."""
        from celery.canvas import maybe_signature
        from kombu.exceptions import OperationalError
        from kombu.utils.json import loads
        from redis import RedisError

        sig = maybe_signature(loads(canvas), app=self.app)
        _bind_app(sig, self.app)
        try:
            with self._no_result_subscriptions(), self._sent_events_setting():
                sig.apply_async(declare=[])
        except (OperationalError, RedisError, ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"cannot re-send run {run_id}: {exc}") from exc

    def start(self, req: StartRequest) -> None:
        err = self.start_many([req])[0]
        if err is not None:
            raise PermanentError(err)

    def start_many(self, reqs: Sequence[StartRequest]) -> list[str | None]:
        """Record every run in the ledger, then send it; per request None, or why its
        canvas could not be built (a builder that raises is that workflow's problem:
        the other runs still start). A broker failure raises BrokerUnavailable (the
        dispatcher retries the batch; the ledger keeps each run once)."""
        from kombu.exceptions import OperationalError
        from redis import RedisError

        out: list[str | None] = []
        prepared: list[tuple[StartRequest, Signature, RunRecord]] = []
        for req in reqs:
            try:
                canvas, record = self.prepare(req)
            except Exception as exc:  # a workflow's builder failed on this event
                log.warning("cannot build %s for %s: %s", req.workflow, req.env.event_id,
                            type(exc).__name__)
                out.append(f"{req.workflow}: building the canvas raised "
                           f"{type(exc).__name__}: {str(exc)[:400]}")
                continue
            out.append(None)
            prepared.append((req, canvas, record))
        if not prepared:
            return out
        held = [self._is_bulk_gpu(canvas) for _, canvas, _ in prepared]
        records = [dataclasses.replace(rec, held=h) for (_, _, rec), h in zip(prepared, held, strict=True)]
        try:
            self.ledger.start_many(records)
            self._hold([c for (_, c, _), h in zip(prepared, held, strict=True) if h])
            with self._no_result_subscriptions(), self._sending() as send:
                for (_, canvas, _), h in zip(prepared, held, strict=True):
                    if not h:
                        send(canvas)
        except (OperationalError, RedisError, ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"cannot send {len(prepared)} run(s): "
                                    f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        for req, err in zip(reqs, out, strict=True):
            if err is None:
                metrics.workflow_run(req.workflow, "started")
        return out

    def _is_bulk_gpu(self, canvas: Signature) -> bool:
        """Whether the run's first task (a chord's first header part) is bulk GPU work."""
        from worker_mesh.gpu_pool.routing import Resource, resource_of_task

        first = next(_plain_tasks(canvas), None)
        return first is not None and resource_of_task(str(first.task)) is Resource.GPU_BULK

    def _hold(self, canvases: list[Signature]) -> None:
        """Runs whose work is bulk GPU work (``Resource.GPU_BULK``) go through the
        off-peak deferral: sent now inside a window, else held durably in Redis until
        the next one (``gpu_pool.deferral``)."""
        if not canvases:
            return
        from datetime import UTC, datetime

        from worker_mesh.gpu_pool.deferral import Deferral

        if self._deferral is None:
            self._deferral = Deferral.for_app(self.app)
        with self._no_result_subscriptions():
            for canvas in canvases:
                self._deferral.submit(dict(canvas), now=datetime.now(UTC))

    @contextlib.contextmanager
    def _no_result_subscriptions(self) -> Iterator[None]:
        """The starter never waits for results: without this, Celery's Redis result
        backend SUBSCRIBEs to every started task's result channel (one round trip and
        one lingering subscription per task: slow, and memory that grows). Scoped to
        the sends, so the rest of the process keeps Celery's normal behaviour."""
        if not self.fire_and_forget:
            yield
            return
        from celery._state import _set_task_join_will_block, task_join_will_block

        before = task_join_will_block()
        _set_task_join_will_block(True)
        try:
            yield
        finally:
            _set_task_join_will_block(before)

    @contextlib.contextmanager
    def _sending(self) -> Iterator[Callable[[Signature], Any]]:
        """Send canvases through ONE producer whose publishes (task messages and
        task-sent events alike) kombu buffers in one Redis pipeline, flushed on exit.

        Canvas types do not all pass a ``producer`` down (a chain drops it), so the
        app's ``producer_or_acquire`` is pinned to this producer for the duration
        (the dispatcher is single-threaded)."""
        with self._sent_events_setting():
            if not self.batch_publish:
                yield lambda canvas: canvas.apply_async(declare=[])
                return
            with self._batched() as send:
                yield send

    @contextlib.contextmanager
    def _sent_events_setting(self) -> Iterator[None]:
        """``task_send_sent_event`` as this starter wants it, for its sends only (the
        app's setting is read per message; the dispatcher is single-threaded)."""
        conf = self.app.conf
        before = conf.task_send_sent_event
        conf.task_send_sent_event = before and self.sent_events
        try:
            yield
        finally:
            conf.task_send_sent_event = before

    @contextlib.contextmanager
    def _batched(self) -> Iterator[Callable[[Signature], Any]]:
        """``declare=[]``: Celery would otherwise run kombu's ``maybe_declare`` of the
        task's queue for every message (a tenth of a start, through
        ``connection.ensure``, though cached). The mesh's queues are direct queues,
        which Celery publishes through the anonymous exchange straight to the queue's
        Redis list: no binding is looked up, so nothing needs declaring before a send
        (``tests/test_dispatcher_starter.py`` starts a run before any worker exists)."""
        with self.app.producer_or_acquire() as producer:
            if not self._batch_checked:
                self._batch_checked = True
                if not producer.supports_batch_publish:
                    log.warning("the broker connection cannot batch publishes (a retry "
                                "option is set): each run costs its own round trips")
            self.app.producer_or_acquire = (  # type: ignore[method-assign]
                lambda p=None: contextlib.nullcontext(p or producer))
            try:
                with producer.batch(max_size=self.batch_max_messages):
                    yield lambda canvas: canvas.apply_async(declare=[])
            finally:
                del self.app.producer_or_acquire


def _bind_app(canvas: Any, app: Celery) -> None:
    """Bind every signature of a canvas rebuilt from JSON to ``app`` (Celery binds only
    the outermost one; the nested ones would fall back to the ambient ``current_app``,
    another broker)."""
    from celery.canvas import _chain, _chord, group

    canvas._app = app
    if isinstance(canvas, _chord):
        for t in canvas.tasks:
            _bind_app(t, app)
        _bind_app(canvas.body, app)
    elif isinstance(canvas, (_chain, group)):
        for t in canvas.tasks:
            _bind_app(t, app)


def as_canvas(built: Any, workflow: str) -> Signature:
    """What a builder returned, as one canvas: a signature (chain, group, chord, task), a
    ``Step`` handle (``enrich`` rather than ``enrich.s()``), or a list/tuple of them (a
    chain). Anything else is that workflow's bug, reported as such."""
    from celery import chain

    if isinstance(built, Signature):
        return built
    if hasattr(built, "s") and hasattr(built, "name") and callable(built.s):
        return built.s()  # type: ignore[no-any-return]
    if isinstance(built, (list, tuple)) and built:
        return chain(*(as_canvas(b, workflow) for b in built))
    raise TypeError(f"workflow {workflow!r} built {type(built).__name__}, not a Celery "
                    "canvas (return a signature, a chain, a group or a chord)")


def _with_headers(canvas: Any, headers: dict[str, str]) -> None:
    """Run metadata in the message headers of every task (what Flower, the metrics and
    ``current_step()`` read), so a task's arguments are its business inputs only."""
    for task in _plain_tasks(canvas):
        task.options["headers"] = {**(task.options.get("headers") or {}), **headers}


def _step_of(task: Signature) -> str:
    ids = split_task_id(task.options.get("task_id"))
    return ids[1] if ids is not None else str(task.task)


def _step_ids(canvas: Any, run_id: str) -> None:
    """Give every task without a run-shaped id one (``<run_id>:<short name>-<i>``), so
    that every step of the run is known to the ledger and memoized."""
    for i, task in enumerate(_plain_tasks(canvas)):
        if split_task_id(task.options.get("task_id")) is None:
            task.options["task_id"] = f"{run_id}:{str(task.task).rsplit('.', 1)[-1]}-{i}"


def _short_reprs(canvas: Any, text: str) -> None:
    """Give every task of the canvas the ``argsrepr`` ``text`` (what Flower, the
    task-sent/received events and the worker's log show instead of the arguments):
    Celery's own ``saferepr`` of the arguments streams in pure Python and cost 13% of a
    start, and the arguments hold event fields that have no business in Flower."""
    for task in _plain_tasks(canvas):
        if "argsrepr" not in task.options:
            task.options["argsrepr"] = text
            task.options["kwargsrepr"] = ""


def _last_task(canvas: Any) -> Signature | None:
    """The plain task the run ends with (a lone task, or a chain's last when it is a
    plain task), or None when the run ends in a group or a chord."""
    from celery.canvas import _chain

    while isinstance(canvas, _chain) and canvas.tasks:
        canvas = canvas.tasks[-1]
    return canvas if type(canvas) is Signature else None


def _link_error_everywhere(canvas: Any, errback: Signature) -> None:
    """Put ``errback`` on every task of the canvas, chord headers included (Celery's own
    ``chord.link_error`` reaches only the body unless a setting says otherwise)."""
    for task in _plain_tasks(canvas):
        task.link_error(errback)


def _plain_tasks(canvas: Any) -> Iterator[Signature]:
    """Every plain task of a canvas: chain and group members, chord headers and body."""
    from celery.canvas import _chain, _chord, group

    if isinstance(canvas, _chord):
        for t in canvas.tasks:
            yield from _plain_tasks(t)
        yield from _plain_tasks(canvas.body)
    elif isinstance(canvas, (_chain, group)):
        for t in canvas.tasks:
            yield from _plain_tasks(t)
    else:
        yield canvas


def describe(req: StartRequest) -> dict[str, Any]:
    return {"workflow": req.workflow, "run_id": req.run_id, **req.env.summary()}
