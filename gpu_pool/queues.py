"""What the GPU queues hold, read straight from the Redis transport's keys.

Kombu's Redis transport keeps a queue as lists ``<global_keyprefix><queue>`` (plus one
list per priority step, ``<queue>\\x06\\x16<step>``) and the messages delivered to a
worker but not yet acknowledged (prefetched or running, with ``acks_late``) in the hash
``<global_keyprefix>unacked`` whose values are JSON ``[message, exchange, routing_key]``.
Counting only list lengths misses that in-flight work, so both are reported.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import redis

from worker_mesh.gpu_pool.routing import GPU_QUEUES
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import translate_errors

PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def _queue_keys(keys: Keys, queue: str) -> list[str]:
    base = keys.celery_prefix() + queue
    return [base] + [f"{base}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS[1:]]


@dataclass(frozen=True)
class QueueDepth:
    queued: dict[str, int]
    reserved: dict[str, int]

    @property
    def total_queued(self) -> int:
        return sum(self.queued.values())

    @property
    def total_reserved(self) -> int:
        return sum(self.reserved.values())


def depths(client: redis.Redis, keys: Keys, queues: tuple[str, ...] = GPU_QUEUES) -> QueueDepth:
    with translate_errors("read queue depths"):
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for k in _queue_keys(keys, q):
                pipe.llen(k)
        lens = pipe.execute()
        queued = {}
        steps = len(PRIORITY_STEPS)
        for i, q in enumerate(queues):
            queued[q] = int(sum(lens[i * steps:(i + 1) * steps]))
        counts: Counter[str] = Counter()
        for _, v in client.hscan_iter(keys.celery_prefix() + "unacked", count=500):
            try:
                routing_key = json.loads(v)[2]
            except (ValueError, IndexError, TypeError):
                continue
            if routing_key in queues:
                counts[routing_key] += 1
    return QueueDepth(queued, {q: counts.get(q, 0) for q in queues})
