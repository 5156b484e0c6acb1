"""Publishing events to the partitioned event streams.

``Publisher`` takes its Redis client and settings explicitly. The module-level
``events.publish`` / ``events.publish_many`` use a default publisher built from
``MeshSettings.load()`` on first use (or set with ``events.configure``).

Durability: ``publish`` returns after Redis has appended the entry to the stream. With
AOF ``appendfsync everysec`` an entry is on disk at most ~1 s later; a Redis crash in that
second can lose it (see docs/reliability.md). A publish that raises ``BrokerUnavailable``
may or may not have been appended: retry it with the same ``event_id`` and idempotency
key, and the dispatcher runs it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from events.base import Envelope, Event
from events.wire import encode
from mesh.keys import Keys, partition_of
from mesh.redis_conn import translate_errors
from mesh.settings import StreamSettings

Publishable = Event | Envelope


class Publisher:
    def __init__(self, client: redis.Redis, streams: StreamSettings, keys: Keys) -> None:
        self._client = client
        self._streams = streams
        self._keys = keys
        self._stream_names = [keys.stream(p) for p in range(streams.partitions)]

    def stream_for(self, entity_key: str) -> str:
        return self._stream_names[partition_of(entity_key, self._streams.partitions)]

    def _prepare(self, item: Publishable) -> tuple[str, dict[str, str], Envelope]:
        env = item if isinstance(item, Envelope) else Envelope.wrap(item)
        return self.stream_for(env.entity_key), encode(env, self._streams.max_payload_bytes), env

    def publish(self, item: Publishable) -> str:
        """Append one event; returns its event id. Raises PayloadTooLarge,
        BrokerUnavailable (retry) or ConfigError (credentials)."""
        stream, fields, env = self._prepare(item)
        with translate_errors("publish"):
            self._client.xadd(
                stream, fields,  # type: ignore[arg-type]
                maxlen=self._streams.maxlen_approx, approximate=True,
            )
        return env.event_id

    def publish_many(self, items: Iterable[Publishable], chunk: int = 1000) -> list[str]:
        """Append many events in pipelined round trips; all are validated (and a too
        large one rejected) before any is sent. Returns the event ids in order."""
        prepared = [self._prepare(item) for item in items]
        maxlen = self._streams.maxlen_approx
        with translate_errors("publish_many"):
            for start in range(0, len(prepared), chunk):
                pipe = self._client.pipeline(transaction=False)
                for stream, fields, _ in prepared[start:start + chunk]:
                    pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.execute()
        return [env.event_id for _, _, env in prepared]


def ids(items: Sequence[Envelope]) -> list[str]:
    return [e.event_id for e in items]
