"""Per-entry outcomes: every stream entry ends in exactly one of them.

Counted in the hash ``keys.outcomes(partition)`` twice: by outcome (``started``) and
by type and outcome (``customer.updated|started``), always in the same MULTI as the
entry's XACK, so that ``mesh audit`` can reconcile published == accounted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import redis

from worker_mesh.monitoring import metrics

STARTED = "started"
"""At least one workflow run was handed to Celery (or had been, before a crash)."""
DEDUPLICATED = "deduplicated"
"""Another entry with the same idempotency key was seen within the dedupe TTL."""
COALESCED = "coalesced"
"""Held in a coalescing slot; one run starts for the slot when it fires."""
UNROUTED = "unrouted"
"""Valid, but no workflow is interested in it."""
DEAD_LETTERED = "dead_lettered"
"""Sent to the dead-letter stream with a reason (invalid, poison, build failure...)."""

ALL = (STARTED, DEDUPLICATED, COALESCED, UNROUTED, DEAD_LETTERED)
INVALID_TYPE = "(invalid)"
"""Type label of entries whose type is not a known event type (keeps labels bounded)."""


class Tally:
    """Outcomes of one batch of one partition, written in one go."""

    def __init__(self) -> None:
        self.by_type: Counter[tuple[str, str]] = Counter()

    def add(self, type_name: str, outcome: str) -> None:
        self.by_type[(type_name, outcome)] += 1

    def __len__(self) -> int:
        return sum(self.by_type.values())

    def queue(self, pipe: redis.client.Pipeline, key: str) -> None:
        by_outcome: Counter[str] = Counter()
        for (type_name, outcome), n in self.by_type.items():
            by_outcome[outcome] += n
            pipe.hincrby(key, f"{type_name}|{outcome}", n)
        for outcome, n in by_outcome.items():
            pipe.hincrby(key, outcome, n)

    def report(self) -> None:
        for (type_name, outcome), n in self.by_type.items():
            metrics.event_outcome(type_name, outcome, n)


def totals(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    """Outcome -> count from an outcomes hash (the ``type|outcome`` fields left out)."""
    out: dict[str, int] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        if "|" not in name:
            out[name] = int(v)
    return out


def by_type(raw: Mapping[bytes | str, bytes | str]) -> dict[str, dict[str, int]]:
    """Type -> outcome -> count from an outcomes hash."""
    out: dict[str, dict[str, int]] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else k
        if "|" in name:
            t, outcome = name.rsplit("|", 1)
            out.setdefault(t, {})[outcome] = int(v)
    return out
