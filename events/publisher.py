"""Publishing events to the partitioned event streams.

``Publisher`` takes its Redis client and settings explicitly. The module-level
``events.publish`` / ``events.publish_many`` use a default publisher built from
``MeshSettings.load()`` on first use (or set with ``events.configure``).

Durability: ``publish`` returns after Redis has appended the entry to the stream. With
AOF ``appendfsync everysec`` an entry is on disk at most ~1 s later; a Redis crash in that
second can lose it (see docs/reliability.md). A publish that raises ``BrokerUnavailable``
may or may not have been appended: retry it with the same ``event_id`` and idempotency
key, and the dispatcher runs it once.

Why the commands are packed here and not by redis-py: profiling ``publish_many`` showed
~75% of the time in redis-py's generic command packer (one ``isinstance`` and one
``encode`` per argument, 22 arguments per XADD). The entry's fields are ours and mostly
constant per stream and event class, so each XADD is built as RESP bytes with one
``%``-format (the constant parts cached), sent in one write per chunk, and the replies are
read back on the same pooled connection with redis-py's own parser, retry policy and
error translation. Validation is unchanged: typed events were validated by pydantic
when they were built (they are frozen, so they stay valid); envelopes are checked for
consistency here; the payload size limit is enforced on the exact UTF-8 bytes. The
fields written are exactly ``events.wire.encode``'s (tests compare them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from worker_mesh.events.base import Envelope, Event
from worker_mesh.mesh.errors import BrokerUnavailable, ConfigError, InvalidEvent, PayloadTooLarge
from worker_mesh.mesh.keys import Keys, partition_of
from worker_mesh.mesh.redis_conn import translate_errors
from worker_mesh.mesh.settings import StreamSettings

Publishable = Event | Envelope

CHUNK_EVENTS = 1000
"""Events per round trip of ``publish_many`` (measured: larger chunks gain < 3%)."""
CHUNK_BYTES = 1 << 20
"""...or fewer, so one round trip never sends more than about 1 MiB."""

_TRANSIENT_REPLIES = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN",
                      "CLUSTERDOWN", "NOREPLICAS")
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_now = datetime.now


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def new_ids(n: int) -> list[str]:
    """``n`` uuid4 hex ids from one ``os.urandom`` call (``uuid.uuid4()`` per event costs
    ~1.8 µs, a tenth of the time budget of one published event)."""
    h = os.urandom(16 * n).hex()
    return [f"{h[i:i + 12]}4{h[i + 13:i + 16]}{_VARIANT[h[i + 16]]}{h[i + 17:i + 32]}"
            for i in range(0, 32 * n, 32)]


class _ClassSegment:
    """The constant ``type`` and ``v`` fields of one event class, packed once."""

    __slots__ = ("packed", "serialize")

    def __init__(self, cls: type[Event]) -> None:
        self.packed = (_bulk(b"type") + _bulk(cls.event_type.encode())
                       + _bulk(b"v") + _bulk(str(cls.schema_version).encode()))
        serializer = cls.__pydantic_serializer__
        self.serialize: Callable[[Event], bytes] = (
            lambda ev: serializer.to_json(ev, exclude_none=True))


class Publisher:
    """Appends events to their partition's stream (``XADD MAXLEN ~``).

    ``producer`` is written as the ``producer`` field of events given without an envelope.
    """

    def __init__(self, client: redis.Redis, streams: StreamSettings, keys: Keys,
                 *, producer: str = "app") -> None:
        self._client = client
        self._streams = streams
        self._keys = keys
        self._partitions = streams.partitions
        self._max_bytes = streams.max_payload_bytes
        self._stream_names = [keys.stream(p) for p in range(streams.partitions)]
        maxlen = str(streams.maxlen_approx).encode()
        # "XADD <stream> MAXLEN ~ <n> *" + 8 field/value pairs = 22 arguments.
        self._heads = [
            b"*22\r\n" + b"".join(_bulk(a) for a in (b"XADD", s.encode(), b"MAXLEN", b"~", maxlen, b"*"))
            for s in self._stream_names
        ]
        self._producer_default = _bulk(b"producer") + _bulk(producer.encode())
        self._classes: dict[type[Event], _ClassSegment] = {}
        # The packed fast path needs one plain connection from a pool; anything else
        # (a cluster client, a single-connection client) goes through redis-py's pipeline.
        self._pool = getattr(client, "connection_pool", None)
        self._fast = (type(client) is redis.Redis and self._pool is not None
                      and getattr(client, "connection", None) is None)
        self._held: Any = None
        self._held_pid = 0
        self._held_lock = threading.Lock()

    def stream_for(self, entity_key: str) -> str:
        return self._stream_names[partition_of(entity_key, self._partitions)]

    # -- packing -------------------------------------------------------------------
    def _segment(self, cls: type[Event]) -> _ClassSegment:
        seg = self._classes.get(cls)
        if seg is None:
            seg = self._classes[cls] = _ClassSegment(cls)
        return seg

    def _payload(self, seg: _ClassSegment, event: Event) -> bytes:
        payload = seg.serialize(event)
        if len(payload) > self._max_bytes:
            raise PayloadTooLarge(
                f"{event.event_type} payload is {len(payload)} bytes, the limit is "
                f"{self._max_bytes} (streams.max_payload_bytes)",
                field="payload",
            )
        return payload

    def _pack(self, item: Publishable, eid: str, ts: str) -> tuple[int, bytes, str]:
        """(partition, packed XADD, event id) of one event; validates as it goes."""
        if isinstance(item, Event):
            seg = self._classes.get(type(item)) or self._segment(type(item))
            payload = self._payload(seg, item)
            key = item.entity_key()
            k = key.encode()
            e = eid.encode()
            i = e
            t = ts.encode()
            producer = self._producer_default
        elif isinstance(item, Envelope):
            _check_envelope(item)
            seg = self._segment(type(item.payload))
            payload = self._payload(seg, item.payload)
            key = item.entity_key
            eid = item.event_id
            k, e, i = key.encode(), eid.encode(), item.idempotency_key.encode()
            t = item.occurred_at.isoformat().encode()
            producer = _bulk(b"producer") + _bulk(item.producer.encode())
        else:
            raise InvalidEvent(
                f"cannot publish a {type(item).__name__}: expected an event (events.catalog) "
                "or an Envelope", field="payload")
        p = partition_of(key, self._partitions) if self._partitions > 1 else 0
        packed = (b"%b$2\r\nid\r\n$%d\r\n%b\r\n%b$3\r\nkey\r\n$%d\r\n%b\r\n$4\r\nidem\r\n$%d\r\n%b\r\n"
                  b"$2\r\nts\r\n$%d\r\n%b\r\n%b$7\r\npayload\r\n$%d\r\n%b\r\n") % (
            self._heads[p], len(e), e, seg.packed, len(k), k, len(i), i, len(t), t,
            producer, len(payload), payload)
        return p, packed, eid

    # -- sending -------------------------------------------------------------------
    def _roundtrip(self, conn: Any, data: bytes, n: int) -> None:
        conn.send_packed_command([data])
        first: redis.ResponseError | None = None
        for _ in range(n):  # read every reply, so the pooled connection stays in step
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                first = first or exc
        if first is not None:
            raise first

    def _send(self, what: str, data: bytes, n: int) -> None:
        with translate_errors(what), _translate_reply(what):
            if self._held_lock.acquire(blocking=False):
                # The publisher keeps one connection checked out: taking one from the
                # pool and giving it back costs as much as the round trip itself
                # (measured: 22k vs 13k single publishes/s). Another thread publishing
                # at the same time borrows from the pool instead of waiting.
                try:
                    conn = self._held
                    if conn is None or self._held_pid != os.getpid():  # new, or forked
                        conn = self._held = self._pool.get_connection()  # type: ignore[union-attr]
                        self._held_pid = os.getpid()
                    self._call(conn, data, n)
                finally:
                    self._held_lock.release()
                return
            pool = self._pool
            assert pool is not None
            conn = pool.get_connection()
            try:
                self._call(conn, data, n)
            finally:
                pool.release(conn)

    def _call(self, conn: Any, data: bytes, n: int) -> None:
        # Same policy as redis-py's pipeline: on a connection error, reconnect and
        # resend (an entry may then be appended twice; the dispatcher dedupes it by its
        # idempotency key).
        conn.retry.call_with_retry(lambda: self._roundtrip(conn, data, n),
                                   lambda _err: conn.disconnect())

    def close(self) -> None:
        """Give the held connection back to the client's pool."""
        with self._held_lock:
            conn, self._held = self._held, None
            if conn is not None and self._pool is not None and self._held_pid == os.getpid():
                self._pool.release(conn)

    def _send_generic(self, what: str, items: Sequence[tuple[int, bytes, str]],
                      fields: Sequence[dict[str, str]]) -> None:
        with translate_errors(what), _translate_reply(what):
            pipe = self._client.pipeline(transaction=False)
            for (p, _, _), f in zip(items, fields, strict=True):
                pipe.xadd(self._stream_names[p], f,  # type: ignore[arg-type]
                          maxlen=self._streams.maxlen_approx, approximate=True)
            pipe.execute()

    # -- public --------------------------------------------------------------------
    def publish(self, item: Publishable) -> str:
        """Append one event; returns its event id. Raises InvalidEvent / PayloadTooLarge
        (bad input), BrokerUnavailable (retry) or ConfigError (credentials)."""
        packed = self._pack(item, new_ids(1)[0], _now(UTC).isoformat())
        if self._fast:
            self._send("publish", packed[1], 1)
        else:
            self._send_generic("publish", [packed], [_fields(packed[1])])
        return packed[2]

    def publish_many(self, items: Iterable[Publishable], chunk: int = CHUNK_EVENTS) -> list[str]:
        """Append many events in pipelined round trips; all are validated (and a too
        large one rejected) before any is sent. Returns the event ids in order.

        Events given without an envelope get the time of the call as ``occurred_at``.
        """
        items = items if isinstance(items, list | tuple) else list(items)
        ts = _now(UTC).isoformat()
        pack = self._pack
        prepared = [pack(item, eid, ts) for item, eid in zip(items, new_ids(len(items)), strict=True)]
        for start in range(0, len(prepared), chunk):
            part = prepared[start:start + chunk]
            if not self._fast:
                self._send_generic("publish_many", part, [_fields(x[1]) for x in part])
                continue
            buf: list[bytes] = []
            size = 0
            for _, packed, _ in part:
                buf.append(packed)
                size += len(packed)
                if size >= CHUNK_BYTES:
                    self._send("publish_many", b"".join(buf), len(buf))
                    buf, size = [], 0
            if buf:
                self._send("publish_many", b"".join(buf), len(buf))
        return [x[2] for x in prepared]


def _check_envelope(env: Envelope) -> None:
    """Envelopes may be built with ``model_construct`` (unvalidated): check what the
    dispatcher would otherwise dead-letter, so the producer hears about it now."""
    payload = env.payload
    if not isinstance(payload, Event):
        raise InvalidEvent("envelope payload is not an event", field="payload")
    if env.type != payload.event_type or env.schema_version != payload.schema_version:
        raise InvalidEvent(
            f"envelope says {env.type} v{env.schema_version} but the payload is "
            f"{payload.event_type} v{payload.schema_version}", field="type")
    if env.entity_key != payload.entity_key():
        raise InvalidEvent(f"envelope key {env.entity_key[:128]!r} but the payload is about "
                           f"{payload.entity_key()!r}", field="key")
    if env.occurred_at.tzinfo is None:
        raise InvalidEvent("occurred_at has no time zone", field="ts")
    for name, value, limit in (("id", env.event_id, 128), ("idem", env.idempotency_key, 512),
                               ("producer", env.producer, 128)):
        if not 0 < len(value) <= limit:
            raise InvalidEvent(f"field {name!r} must be 1..{limit} characters", field=name)


def _fields(packed: bytes) -> dict[str, str]:
    """The field/value pairs of a packed XADD (for the generic pipeline path)."""
    args: list[bytes] = []
    pos = packed.index(b"\r\n") + 2
    while pos < len(packed):
        end = packed.index(b"\r\n", pos)
        size = int(packed[pos + 1:end])
        args.append(packed[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
    pairs = args[6:]
    return {pairs[j].decode(): pairs[j + 1].decode() for j in range(0, len(pairs), 2)}


class _ReplyTranslator:
    """Error replies to XADD: transient server states -> BrokerUnavailable, the rest
    (wrong key type, missing permission) -> ConfigError."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> Literal[False]:
        if isinstance(exc, redis.ResponseError) and not isinstance(exc, redis.AuthenticationError):
            text = str(exc).split("\n")[0][:200]
            if text.startswith(_TRANSIENT_REPLIES):
                raise BrokerUnavailable(f"{self.what}: Redis refused the write: {text}") from exc
            raise ConfigError(f"{self.what}: Redis refused the write: {text}") from exc
        return False


def _translate_reply(what: str) -> _ReplyTranslator:
    return _ReplyTranslator(what)


def ids(items: Sequence[Envelope]) -> list[str]:
    return [e.event_id for e in items]
