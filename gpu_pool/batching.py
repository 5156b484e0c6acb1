"""Micro-batching: many single-item requests, one forward pass.

How it sits in Celery: each request is an ordinary task message (one text, one churn
row) on the ``gpu`` / ``gpu-batch`` queue, so each item keeps its own task id, its own
retry policy and its own place in its chain. A GPU worker runs the **threads** pool with
concurrency ``2 x max_batch`` and ``prefetch_multiplier=1`` (bounded prefetch; one
batch in the forward pass while the next one gathers). Every task thread hands its item
to the process's ``MicroBatcher`` for its task type and blocks on a future; the batcher's
thread gathers up to ``max_batch`` items or ``max_wait_ms`` after the first, whichever
comes first, runs **one** forward pass and resolves each future with its own result.
The task then returns that result, Celery stores it and acknowledges the message
(``acks_late``: acknowledged only after the result is stored) and the item's chain
continues with its own result.

Failures:

- an item rejected by ``prepare`` (bad input) fails alone, before the batch is formed;
- a forward pass that raises is retried ``retries`` times with the same items; if it
  still fails, the batch is split in halves and each half run on its own (recursively),
  so a poisoned item fails alone and every other item gets its result;
- nothing is lost: a future is always resolved (result or exception), and a task that
  gets an exception is retried by Celery per its kind like any other task.

Why not ``celery-batches``: it hands a list of requests to one task and the results must
be written back by hand (``app.backend.mark_as_done``), bypassing chains, retries and
acks per item; and its latest release on PyPI (0.11) requires ``celery<5.7`` while this
project pins 5.7.0. This design keeps stock Celery semantics per item.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from worker_mesh.mesh.errors import PermanentError

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


@dataclass(frozen=True)
class BatchReport:
    """One forward pass, for metrics and cost: size, how long the first item waited,
    how long the pass took, and the tags of its items."""

    task_type: str
    size: int
    wait_s: float
    run_s: float
    ok: bool
    tags: tuple[str, ...] = field(default=())


class MicroBatcher(Generic[P, R]):
    """Gathers items for ``fn(list[P]) -> list[R]`` (one result per item, same order)."""

    def __init__(self, task_type: str, fn: Callable[[list[P]], Sequence[R]], *,
                 max_batch: int, max_wait_ms: int, retries: int = 1,
                 on_batch: Callable[[BatchReport], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.task_type = task_type
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.retries = retries
        self.on_batch = on_batch
        self.clock = clock
        self._q: queue.Queue[_Item[P] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- client side -------------------------------------------------------------------
    def submit(self, payload: P, tag: str = "") -> Future[R]:
        fut: Future[R] = Future()
        self._ensure_thread()
        self._q.put(_Item(payload, fut, self.clock(), tag))
        return fut

    def __call__(self, payload: P, timeout_s: float | None = None, tag: str = "") -> R:
        """Submit one item and wait for its own result (or its own exception)."""
        return self.submit(payload, tag).result(timeout_s)

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

    def _gather(self) -> tuple[list[_Item[P]], bool]:
        first = self._q.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        while True:
            batch, stop = self._gather()
            if batch:
                try:
                    self._run(batch, self.clock() - batch[0].enqueued_at)
                except BaseException as exc:  # pragma: no cover - never leave a future hanging
                    for it in batch:
                        if not it.future.done():
                            it.future.set_exception(exc)
            if stop:
                return

    def _run(self, batch: list[_Item[P]], wait_s: float) -> None:
        attempts = 1 + self.retries
        last: BaseException | None = None
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                results = list(self.fn([it.payload for it in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"{self.task_type}: {len(results)} results for {len(batch)} items")
            except PermanentError as exc:
                last = exc
                self._report(batch, wait_s, time.perf_counter() - t0, ok=False)
                break  # retrying the same input cannot help; isolate the culprit
            except Exception as exc:
                last = exc
                self._report(batch, wait_s, time.perf_counter() - t0, ok=False)
                log.warning("%s batch of %d failed (attempt %d/%d): %s", self.task_type,
                            len(batch), attempt + 1, attempts, exc)
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
