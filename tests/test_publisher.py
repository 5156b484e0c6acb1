"""Publisher against a real redis-server: the fields written, partitioning by crc32 of
the entity key, order under pipelining, MAXLEN trimming, the payload limit, and errors.

The publisher packs XADD commands itself (see events/publisher.py), so these tests read
the streams back with plain redis-py and compare with ``events.wire.encode``/``decode``.
"""

from __future__ import annotations

import threading
import zlib
from datetime import UTC, datetime

import pytest
import redis

from worker_mesh import events
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentUpdated, CustomerActivity, CustomerUpdated
from worker_mesh.events.publisher import Publisher, new_ids
from worker_mesh.events.wire import decode, encode
from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.errors import BrokerUnavailable, ConfigError, InvalidEvent, PayloadTooLarge
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration


def _settings(base: MeshSettings, **streams: int) -> MeshSettings:
    return base.model_copy(update={"streams": base.streams.model_copy(update=streams)})


def _publisher(settings: MeshSettings, client: redis.Redis) -> Publisher:
    return Publisher(client, settings.streams, Keys(settings.redis.key_prefix))


def _entries(r: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(stream)]


def test_published_fields_are_the_wire_format(settings: MeshSettings, r: redis.Redis) -> None:
    # Given an envelope with every field set, including non-ASCII text
    pub = _publisher(settings, r)
    env = Envelope.wrap(
        ContentUpdated(content_id="doc-1", title="Café ☕ — über", body="naïve 🚀 " * 50, version=3),
        idempotency_key="doc-1@3", producer="cms", occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    # When it is published
    event_id = pub.publish(env)
    # Then the entry holds exactly the documented fields, and decodes back to the event
    [(_, raw)] = r.xrange(pub.stream_for(env.entity_key))
    assert event_id == env.event_id
    assert {k.decode(): v.decode() for k, v in raw.items()} == encode(env, 65536)
    back = decode(raw, settings.streams.max_payload_bytes)
    assert back.payload == env.payload
    assert (back.idempotency_key, back.producer, back.occurred_at) == ("doc-1@3", "cms", env.occurred_at)


def test_plain_event_gets_id_time_and_idempotency_key(settings: MeshSettings, r: redis.Redis) -> None:
    pub = _publisher(settings, r)
    before = datetime.now(UTC)
    event_id = pub.publish(CustomerUpdated(customer_id="42", plan="pro"))
    [(_, raw)] = r.xrange(pub.stream_for("customer:42"))
    env = decode(raw, settings.streams.max_payload_bytes)
    assert env.event_id == event_id == env.idempotency_key
    assert len(event_id) == 32 and event_id[12] == "4"  # uuid4 hex
    assert env.producer == "app" and env.entity_key == "customer:42"
    assert before <= env.occurred_at <= datetime.now(UTC)
    assert raw[b"payload"] == b'{"customer_id":"42","plan":"pro","version":1}'  # None fields left out


def test_partitioned_by_crc32_of_entity_key(settings: MeshSettings, r: redis.Redis) -> None:
    # Given 4 partitions
    s = _settings(settings, partitions=4)
    pub = _publisher(s, r)
    keys = Keys(s.redis.key_prefix)
    customers = [str(i) for i in range(40)]
    # When one activity event per customer is published (half one by one, half pipelined)
    pub.publish_many([CustomerActivity(customer_id=c, logins_30d=1, active_days_30d=1)
                      for c in customers[:20]])
    for c in customers[20:]:
        pub.publish(CustomerActivity(customer_id=c, logins_30d=1, active_days_30d=1))
    # Then each is in stream crc32("customer:<id>") % 4, and every partition got some
    seen: dict[str, int] = {}
    for p in range(4):
        for f in _entries(r, keys.stream(p)):
            seen[f["key"]] = p
    assert seen == {f"customer:{c}": zlib.crc32(f"customer:{c}".encode()) % 4 for c in customers}
    assert set(seen.values()) == {0, 1, 2, 3}
    assert all(keys.stream(p).startswith("{") for p in range(4))  # hash-tagged for Cluster


def test_publish_many_keeps_order_across_chunks(settings: MeshSettings, r: redis.Redis) -> None:
    # Given more events than one pipelined chunk, for one entity
    pub = _publisher(settings, r)
    evs = [CustomerUpdated(customer_id="7", version=v) for v in range(1, 251)]
    # When published in chunks of 16
    ids = pub.publish_many(evs, chunk=16)
    # Then the stream holds them in the given order, and the ids are returned in order
    got = _entries(r, pub.stream_for("customer:7"))
    assert [f["id"] for f in got] == ids
    assert [f["payload"] for f in got] == [e.model_dump_json(exclude_none=True) for e in evs]
    assert len(set(ids)) == 250


def test_publish_many_accepts_any_iterable_and_empty(settings: MeshSettings, r: redis.Redis) -> None:
    pub = _publisher(settings, r)
    assert pub.publish_many([]) == []
    ids = pub.publish_many(CustomerUpdated(customer_id=str(i)) for i in range(5))
    assert len(ids) == 5 and r.xlen(pub.stream_for("customer:0")) == 5


def test_stream_trimmed_to_approximate_maxlen(settings: MeshSettings, r: redis.Redis) -> None:
    # Given MAXLEN ~1000
    s = _settings(settings, maxlen_approx=1000)
    pub = _publisher(s, r)
    # When 5000 events are published
    pub.publish_many([CustomerUpdated(customer_id="1", version=v) for v in range(1, 5001)])
    # Then the stream was trimmed to about 1000 (whole nodes: never below, a little above)
    length = r.xlen(pub.stream_for("customer:1"))
    assert 1000 <= length < 1500
    # and the newest entries are the ones kept
    [(_, last)] = r.xrevrange(pub.stream_for("customer:1"), count=1)
    assert last[b"payload"].endswith(b'"version":5000}')


def test_payload_limit_rejects_with_clear_error(settings: MeshSettings, r: redis.Redis) -> None:
    # Given a 300-byte limit
    s = _settings(settings, max_payload_bytes=300)
    pub = _publisher(s, r)
    big = ContentUpdated(content_id="d", title="t", body="é" * 200, version=1)  # 400+ bytes UTF-8
    # When it is published, alone or among valid events
    with pytest.raises(PayloadTooLarge) as err:
        pub.publish(big)
    assert err.value.field == "payload"
    assert "content.updated payload is" in str(err.value) and "limit is 300" in str(err.value)
    with pytest.raises(PayloadTooLarge):
        pub.publish_many([CustomerUpdated(customer_id="1"), big, CustomerUpdated(customer_id="2")])
    # Then nothing at all was written (all are checked before any is sent)
    assert r.xlen(pub.stream_for("customer:1")) == 0
    assert r.xlen(pub.stream_for("content:d")) == 0
    # and a payload just under the limit (counted in bytes, not characters) passes
    ok = ContentUpdated(content_id="d", title="t", body="é" * 100, version=1)
    assert len(ok.model_dump_json(exclude_none=True).encode()) <= 300
    pub.publish(ok)
    assert r.xlen(pub.stream_for("content:d")) == 1


def test_inconsistent_envelope_and_non_event_rejected(settings: MeshSettings, r: redis.Redis) -> None:
    pub = _publisher(settings, r)
    good = Envelope.wrap(CustomerUpdated(customer_id="1"))
    wrong_key = good.model_copy(update={"entity_key": "customer:2"})
    wrong_type = good.model_copy(update={"type": "customer.created"})
    naive = good.model_copy(update={"occurred_at": datetime(2026, 1, 1)})
    for bad, field in ((wrong_key, "key"), (wrong_type, "type"), (naive, "ts")):
        with pytest.raises(InvalidEvent) as err:
            pub.publish(bad)
        assert err.value.field == field
    with pytest.raises(InvalidEvent, match="cannot publish a dict"):
        pub.publish_many([CustomerUpdated(customer_id="1"), {"customer_id": "1"}])  # type: ignore[list-item]
    assert r.xlen(pub.stream_for("customer:1")) == 0


def test_redis_error_reply_translated_and_connection_stays_usable(
    settings: MeshSettings, r: redis.Redis
) -> None:
    # Given 2 partitions where partition 1's stream key is (wrongly) a string
    s = _settings(settings, partitions=2)
    pub = _publisher(s, r)
    keys = Keys(s.redis.key_prefix)
    r.set(keys.stream(1), "not a stream")
    evs = [CustomerUpdated(customer_id=str(i)) for i in range(20)]
    # When a batch touching both partitions is published
    with pytest.raises(ConfigError, match="WRONGTYPE"):
        pub.publish_many(evs)
    # Then the other partition's entries were written, and the publisher still works
    # (every reply was read, so the held connection is in step)
    in_p0 = [e for e in evs if pub.stream_for(e.entity_key()) == keys.stream(0)]
    assert r.xlen(keys.stream(0)) == len(in_p0) > 0
    pub.publish(in_p0[0])
    assert r.xlen(keys.stream(0)) == len(in_p0) + 1


def test_unreachable_redis_is_broker_unavailable(settings: MeshSettings) -> None:
    s = MeshSettings.load({"MESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                           "MESH_REDIS_RETRY_MAX_BACKOFF_S": "0.1"})
    client = make_client(s.redis)
    pub = _publisher(s, client)
    with pytest.raises(BrokerUnavailable):
        pub.publish(CustomerUpdated(customer_id="1"))
    with pytest.raises(BrokerUnavailable):
        pub.publish_many([CustomerUpdated(customer_id="1")])


def test_concurrent_threads_all_published(settings: MeshSettings, r: redis.Redis) -> None:
    # Given one publisher shared by 4 threads (one holds its connection, others borrow)
    pub = _publisher(settings, r)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(100):
                pub.publish(CustomerUpdated(customer_id=f"{t}-{i}"))
            pub.publish_many([CustomerUpdated(customer_id=f"{t}-m{i}") for i in range(100)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    entries = _entries(r, pub.stream_for("customer:x"))
    assert len(entries) == 800 == len({f["id"] for f in entries})
    pub.close()


def test_generic_client_path_writes_same_fields(settings: MeshSettings, r: redis.Redis) -> None:
    # Given a client the packed path does not use (single connection), and 3 partitions
    s = _settings(settings, partitions=3)
    client = redis.Redis.from_url(s.redis.url.get_secret_value(), single_connection_client=True)  # type: ignore[union-attr]
    pub = _publisher(s, client)
    env = Envelope.wrap(ContentUpdated(content_id="d-1", title="t", body="b ü", version=2))
    # When it publishes one event and a batch
    pub.publish(env)
    pub.publish_many([CustomerUpdated(customer_id=str(i)) for i in range(10)])
    # Then the fields are the wire format and the partitioning is the same
    [raw] = [f for _, f in r.xrange(pub.stream_for(env.entity_key)) if f[b"id"] == env.event_id.encode()]
    assert {k.decode(): v.decode() for k, v in raw.items()} == encode(env, 65536)
    total = sum(r.xlen(Keys(s.redis.key_prefix).stream(p)) for p in range(3))
    assert total == 11
    client.close()


def test_module_level_publish_uses_configured_publisher(settings: MeshSettings, r: redis.Redis) -> None:
    pub = _publisher(settings, r)
    events.configure(pub)
    try:
        one = events.publish(CustomerUpdated(customer_id="9"))
        many = events.publish_many([CustomerUpdated(customer_id="9", version=2)])
    finally:
        events.configure(None)
    assert [f["id"] for f in _entries(r, pub.stream_for("customer:9"))] == [one, *many]


def test_new_ids_are_uuid4_hex() -> None:
    import uuid

    ids = new_ids(500)
    assert len(set(ids)) == 500
    for i in ids[:50]:
        u = uuid.UUID(hex=i)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and u.hex == i
