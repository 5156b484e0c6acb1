"""Micro-batching: many single-item requests, one call of a function that takes a list.

The generic part of batching, used by the GPU pool (one forward pass for many texts,
``gpu_pool.batching``) and by batched workflow steps on any queue
(``workers.batched``: one ``predict`` on a feature matrix for many customers).

Callers hand items to the process's ``MicroBatcher`` and block on a future; the
batcher's thread gathers up to ``max_batch`` items, or ``max_wait_ms`` after the first,
or - when it knows how many callers there can be (``max_callers``, the worker's task
threads) - as soon as every one of them has its items in, whichever comes first. It then
makes **one** call of ``fn(items) -> results`` and resolves each future with its own
result. A caller may hand over several items at once (``map``: a document's chunks);
they stay together in one batch where they fit.

Failures (each item keeps its own outcome):

- a call that raises is retried ``retries`` times with the same items; if it still
  fails, the batch is split in halves and each half run on its own (recursively), so a
  poisoned item fails alone and every other item gets its result;
- ``PermanentError`` (bad input) is not retried as a whole: the batch is split at once;
- a result that is an exception instance fails that item only;
- nothing is lost: a future is always resolved (result or exception).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from worker_mesh.mesh.errors import PermanentError

__all__ = ["BatchReport", "MicroBatcher"]

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")


@dataclass
class _Item(Generic[P]):
    payload: P
    future: Future[Any]
    enqueued_at: float
    tag: str = ""
    """Free-form attribution (e.g. ``deferred``/``direct`` for the cost accounting)."""
    caller: int = 0
    """Which request the item came with (items of one ``map`` share it)."""


@dataclass(frozen=True)
class BatchReport:
    """One call, for metrics and cost: size, how long the first item waited, how long
    the call took, and the tags of its items."""

    task_type: str
    size: int
    wait_s: float
    run_s: float
    ok: bool
    tags: tuple[str, ...] = field(default=())


class MicroBatcher(Generic[P, R]):
    """Gathers items for ``fn(list[P]) -> list[R]`` (one result per item, same order).

    ``max_callers``: how many threads can be waiting on this batcher at once (the
    worker's task threads; 1 in a prefork child or a solo worker). When every one of
    them has its items in the batch nobody else can add any, so the batch runs without
    waiting out ``max_wait_ms``. None: unknown (always wait for the size or the time).
    """

    def __init__(self, task_type: str, fn: Callable[[list[P]], Sequence[R]], *,
                 max_batch: int, max_wait_ms: int, retries: int = 1,
                 on_batch: Callable[[BatchReport], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_callers: int | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.task_type = task_type
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.retries = retries
        self.on_batch = on_batch
        self.clock = clock
        self.max_callers = max_callers
        self._q: queue.Queue[list[_Item[P]] | None] = queue.Queue()
        self._carry: deque[list[_Item[P]]] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._callers = 0

    # -- client side -------------------------------------------------------------------
    def submit(self, payload: P, tag: str = "") -> Future[R]:
        return self.submit_many([payload], tag)[0]

    def submit_many(self, payloads: Sequence[P], tag: str = "") -> list[Future[R]]:
        """Hand over several items as one request (they stay together where they fit)."""
        self._ensure_thread()
        now = self.clock()
        with self._lock:
            self._callers += 1
            caller = self._callers
        items = [_Item(p, Future(), now, tag, caller) for p in payloads]
        if items:
            self._q.put(items)
        return [it.future for it in items]

    def __call__(self, payload: P, timeout_s: float | None = None, tag: str = "") -> R:
        """Submit one item and wait for its own result (or its own exception)."""
        return self.submit(payload, tag).result(timeout_s)

    def map(self, payloads: Sequence[P], timeout_s: float | None = None, tag: str = "") -> list[R]:
        """Submit items together and wait for all their results (the first exception
        raises, after every item is resolved)."""
        futures = self.submit_many(payloads, tag)
        return [f.result(timeout_s) for f in futures]

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the items already submitted, then stop the thread."""
        with self._lock:
            self._stopped = True
            t = self._thread
        if t is not None:
            self._q.put(None)
            t.join(timeout_s)

    # -- batching thread ---------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"batcher {self.task_type!r} is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name=f"mesh-batcher-{self.task_type}", daemon=True)
                self._thread.start()

    def _next(self, timeout_s: float | None) -> list[_Item[P]] | None:
        """The next request (carried-over remainder first); raises queue.Empty."""
        if self._carry:
            return self._carry.popleft()
        if timeout_s is None:
            return self._q.get()
        return self._q.get(timeout=timeout_s) if timeout_s > 0 else self._q.get_nowait()

    def _all_callers_in(self, batch: list[_Item[P]]) -> bool:
        return (self.max_callers is not None and not self._carry
                and len({it.caller for it in batch}) >= self.max_callers)

    def _gather(self) -> tuple[list[_Item[P]], bool]:
        first = self._next(None)
        if first is None:
            return [], True
        batch = self._take(first, [])
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch and not self._all_callers_in(batch):
            try:
                req = self._next(deadline - time.monotonic())
            except queue.Empty:
                break
            if req is None:
                return batch, True
            batch = self._take(req, batch)
        return batch, False

    def _take(self, req: list[_Item[P]], batch: list[_Item[P]]) -> list[_Item[P]]:
        room = self.max_batch - len(batch)
        if len(req) > room:
            self._carry.appendleft(req[room:])
        return batch + req[:room]

    def _loop(self) -> None:
        while True:
            batch, stop = self._gather()
            if batch:
                try:
                    self._run(batch, self.clock() - min(it.enqueued_at for it in batch))
                except BaseException as exc:  # pragma: no cover - never leave a future hanging
                    for it in batch:
                        if not it.future.done():
                            it.future.set_exception(exc)
            if stop:
                while self._carry:  # a closing batcher still finishes what it was given
                    rest = self._carry.popleft()
                    self._run(rest, 0.0)
                return

    def _call(self, batch: list[_Item[P]]) -> list[Any]:
        results = list(self.fn([it.payload for it in batch]))
        if len(results) != len(batch):
            raise RuntimeError(f"{self.task_type}: {len(results)} results for {len(batch)} items")
        return results

    def _run(self, batch: list[_Item[P]], wait_s: float) -> None:
        attempts = 1 + self.retries
        last: BaseException | None = None
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                results = self._call(batch)
            except PermanentError as exc:
                last = exc
                self._report(batch, wait_s, time.perf_counter() - t0, ok=False)
                break  # retrying the same input cannot help; isolate the culprit
            except Exception as exc:
                last = exc
                self._report(batch, wait_s, time.perf_counter() - t0, ok=False)
                log.warning("%s batch of %d failed (attempt %d/%d): %s", self.task_type,
                            len(batch), attempt + 1, attempts, type(exc).__name__)
                continue
            self._report(batch, wait_s, time.perf_counter() - t0, ok=True)
            for it, res in zip(batch, results, strict=True):
                if isinstance(res, BaseException):
                    it.future.set_exception(res)
                else:
                    it.future.set_result(res)
            return
        assert last is not None
        if len(batch) == 1:
            batch[0].future.set_exception(last)
            return
        mid = len(batch) // 2
        log.warning("%s: splitting failed batch of %d to isolate the failing item(s)",
                    self.task_type, len(batch))
        self._run(batch[:mid], wait_s)
        self._run(batch[mid:], wait_s)

    def _report(self, batch: list[_Item[P]], wait_s: float, run_s: float, *, ok: bool) -> None:
        if self.on_batch is None:
            return
        try:
            self.on_batch(BatchReport(self.task_type, len(batch), wait_s, run_s, ok,
                                      tuple(it.tag for it in batch)))
        except Exception:  # pragma: no cover - accounting never fails a batch
            log.debug("on_batch hook failed", exc_info=True)
