"""Starting workflow runs as Celery canvases (the dispatcher's ``WorkflowStarter``).

Every run's canvas gets two additions:

* the run's success is recorded (freshness, durations) once every step succeeded:
  when the run's last task is a plain task (a lone task, or a chain ending in one), by
  that task itself: the starter gives it the reserved keyword argument ``_mesh_finish``
  (``workers.kinds.FINISH_KWARG``), which the task wrapper pops and, after the function
  returned, records inline (``workers.runstats.record_success``) - no second task per
  run, which used to halve a worker's throughput of runs. A canvas that ends in a
  group or a chord (a chord's body, whose task is sent by Redis's chord counter) gets
  the bookkeeping task ``mesh.run.finished`` as its last link instead (immutable,
  task id ``<run_id>:finished``);
* ``mesh.dlq.workflow_failed`` as the error callback of every task, so a run whose task
  finally fails (after its retries) dead-letters the event that started it, with the
  last error, ready to be replayed once fixed.

The messages the dispatcher sends are made cheap to build: a short ``argsrepr``
(``workflow=<name> event=<type> id=<event id> run=<run id>``: who and why, no event
fields, in Flower and the logs), no per-message queue
declaration (``declare=[]``: on the Redis transport a queue needs none, see
``_sending``), and no ``task-sent`` event (Flower and the metrics see each task from
the worker's own received/started/succeeded events; starts are counted by the
dispatcher's outcomes and ``mesh_workflow_runs_total{outcome="started"}``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from celery.canvas import Signature

from chains.registry import RunContext, WorkflowRegistry
from events.base import Envelope
from events.routing import StartRequest
from events.wire import encode
from mesh.errors import BrokerUnavailable, PermanentError
from monitoring import metrics
from workers.kinds import FINISH_KWARG, FINISHED_TASK

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["CeleryStarter", "StartRequest"]

log = logging.getLogger("mesh.starter")

FAILED_TASK = "mesh.dlq.workflow_failed"


class CeleryStarter:
    """Builds each run's canvas from its event and hands it to the broker."""

    def __init__(self, app: Celery, registry: WorkflowRegistry, *, max_payload_bytes: int = 1 << 20,
                 fire_and_forget: bool = True, batch_publish: bool = True,
                 batch_max_messages: int = 2000, sent_events: bool = False) -> None:
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

    def run_id(self, workflow: str, env: Envelope, attempt: str = "") -> str:
        return self.registry.get(workflow).run_id(env, attempt)

    def canvas(self, req: StartRequest) -> Signature:
        """The run's full canvas: the workflow's own, its success recorded by its last
        task (or by ``mesh.run.finished`` after a final group/chord), with the
        dead-letter error callback on every task."""
        wf = self.registry.get(req.workflow)
        ctx = RunContext(self.app, req.run_id, wf.name, wf.version, req.coalesced, req.env.type)
        started_at = time.time()
        body = wf.build(req.env, ctx)
        fields = req.fields if req.fields is not None else encode(req.env, self.max_payload_bytes)
        errback = self.app.signature(FAILED_TASK, args=(ctx.meta, fields, started_at))
        _link_error_everywhere(body, errback)
        _short_reprs(body, f"workflow={wf.name} event={req.env.type} id={req.env.event_id} run={req.run_id}")
        last = _last_task(body)
        if last is not None and self._records_its_finish(last.task):
            last.kwargs[FINISH_KWARG] = {"meta": ctx.meta, "started_at": started_at}
            return body
        finished = self.app.signature(FINISHED_TASK, args=(ctx.meta, started_at),
                                      task_id=f"{req.run_id}:finished", immutable=True)
        finished.link_error(errback)
        return body | finished

    def _records_its_finish(self, task_name: str) -> bool:
        """Whether ``task_name`` is a mesh task (bound by ``workers.kinds``), whose
        wrapper understands ``FINISH_KWARG``; any other task (unknown to this process,
        or a plain Celery task) gets the ``mesh.run.finished`` task after it."""
        task = self.app.tasks.get(task_name)
        return task is not None and getattr(task, "mesh_kind", None) is not None

    def start(self, req: StartRequest) -> None:
        err = self.start_many([req])[0]
        if err is not None:
            raise PermanentError(err)

    def start_many(self, reqs: Sequence[StartRequest]) -> list[str | None]:
        """Send every run; per request None, or why its canvas could not be built.
        A broker failure raises BrokerUnavailable (the dispatcher retries the batch)."""
        from kombu.exceptions import OperationalError
        from redis import RedisError

        out: list[str | None] = []
        canvases: list[Signature] = []
        for req in reqs:
            try:
                canvases.append(self.canvas(req))
            except Exception as exc:  # a workflow's builder failed on this event
                log.warning("cannot build %s for %s: %s", req.workflow, req.env.event_id, exc)
                out.append(f"{req.workflow}: building the canvas raised "
                           f"{type(exc).__name__}: {str(exc)[:400]}")
                continue
            out.append(None)
        if not canvases:
            return out
        canvases = self._hold_bulk_gpu_work(canvases)
        try:
            with self._no_result_subscriptions(), self._sending() as send:
                for canvas in canvases:
                    send(canvas)
        except (OperationalError, RedisError, ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"cannot send {len(canvases)} run(s): {exc}") from exc
        for req, err in zip(reqs, out, strict=True):
            if err is None:
                metrics.workflow_run(req.workflow, "started")
        return out

    def _hold_bulk_gpu_work(self, canvases: list[Signature]) -> list[Signature]:
        """Runs whose work is bulk GPU work (``Resource.GPU_BULK``) go through the
        off-peak deferral: sent now inside a window, else held durably in Redis until
        the next one (``gpu_pool.deferral``). Returns the canvases to send now."""
        from datetime import UTC, datetime

        from gpu_pool.deferral import Deferral, sig_resource
        from gpu_pool.routing import Resource

        now_sends: list[Signature] = []
        for canvas in canvases:
            as_dict = dict(canvas)
            if sig_resource(as_dict) is not Resource.GPU_BULK:
                now_sends.append(canvas)
                continue
            if self._deferral is None:
                self._deferral = Deferral.for_app(self.app)
            with self._no_result_subscriptions():
                self._deferral.submit(as_dict, now=datetime.now(UTC))
        return now_sends

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
