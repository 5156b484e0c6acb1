"""Micro-batching: many single-item requests, one forward pass.

How it sits in Celery: each request is an ordinary task message (one text, one churn
row) on the ``gpu`` / ``gpu-batch`` queue, so each item keeps its own task id, its own
retry policy and its own place in its chain. A GPU worker runs the **threads** pool with
concurrency ``2 x max_batch`` and ``prefetch_multiplier=1`` (bounded prefetch; one
batch in the forward pass while the next one gathers). Every task thread hands its item
to the process's ``MicroBatcher`` for its task type and blocks on a future; the batcher's
thread gathers up to ``max_batch`` items or ``max_wait_ms`` after the first, whichever
comes first (or, in a worker, as soon as every task thread has its item in), runs
**one** forward pass and resolves each future with its own result.
The task then returns that result, Celery stores it and acknowledges the message
(``acks_late``: acknowledged only after the result is stored) and the item's chain
continues with its own result.

The batcher itself is generic (``mesh.batching``, shared with the batched workflow
steps of any queue, ``workers.batched``); this module is its GPU face. Failures:

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

from worker_mesh.mesh.batching import BatchReport, MicroBatcher

__all__ = ["BatchReport", "MicroBatcher"]
