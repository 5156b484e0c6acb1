"""Hostile producers, through a real dispatcher and redis-server: every trick below is
dead-lettered with a reason naming the field, and nothing reaches a workflow."""

from __future__ import annotations

import pytest
import redis

from tests.test_dispatcher_inprocess import RecordingStarter, _registry
from worker_mesh.events.dispatcher import Dispatcher
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.integration

BASE = {"v": "1", "key": "customer:42", "ts": "2026-11-23T10:00:00+00:00", "producer": "evil"}


@pytest.fixture
def setup(settings: MeshSettings, r: redis.Redis):  # type: ignore[no-untyped-def]
    keys = Keys(settings.redis.key_prefix)
    starter = RecordingStarter(_registry())
    d = Dispatcher(r, settings, keys, starter.registry, starter, consumer="test-h")
    d.ensure_groups()
    return d, starter, keys


def _dead_letter_of(d: Dispatcher, r: redis.Redis, keys: Keys, fields: dict[str, str]):  # type: ignore[no-untyped-def]
    r.xadd(keys.stream(0), fields)
    for _ in range(3):
        d.step()
    [dl] = DeadLetters(r, keys, d.settings.streams).list()
    r.delete(keys.dlq)
    return dl


@pytest.mark.parametrize(("payload", "field"), [
    ('{"customer_id":"42","mrr":Infinity}', "payload"),
    ('{"customer_id":"42","mrr":-Infinity}', "payload"),
    ('{"customer_id":"42","mrr":NaN}', "payload"),
    ('{"customer_id":"42","mrr":1e999}', "payload"),
    ('{"customer_id":"42","seats":"3"}', "seats"),
    ('{"customer_id":"42","seats":true}', "seats"),
    ('{"customer_id":"42","plan":"pro","plan":"free"}', "payload.plan"),
])
def test_numbers_types_and_repeated_keys_are_refused(setup, r: redis.Redis, payload: str,  # type: ignore[no-untyped-def]
                                                      field: str) -> None:
    d, starter, keys = setup
    dl = _dead_letter_of(d, r, keys, {"id": "h1", "type": "customer.updated", **BASE,
                                      "payload": payload})
    assert dl.reason_code == "invalid" and field in dl.reason, dl.reason
    assert starter.started == []


def test_a_repeated_key_with_the_same_value_is_harmless(setup, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    d, starter, keys = setup
    r.xadd(keys.stream(0), {"id": "h2", "type": "customer.activity", **BASE,
                            "payload": '{"customer_id":"42","logins_30d":1,"logins_30d":1,'
                                       '"active_days_30d":1}'})
    for _ in range(3):
        d.step()
    assert [q.workflow for q in starter.started] == ["probe"]


def test_a_stream_entry_repeating_a_field_with_another_value_is_refused(  # type: ignore[no-untyped-def]
        setup, r: redis.Redis) -> None:
    d, starter, keys = setup
    # XADD allows a field twice; redis-py's dict would silently keep the last one.
    r.execute_command("XADD", keys.stream(0), "*", "id", "h3", "type", "customer.activity",
                      "v", "1", "ts", BASE["ts"], "type", "customer.updated",
                      "payload", '{"customer_id":"42","logins_30d":1,"active_days_30d":1}')
    for _ in range(3):
        d.step()
    [dl] = DeadLetters(r, keys, d.settings.streams).list()
    assert "'type' is repeated" in dl.reason and starter.started == []


def test_a_timestamp_far_in_the_future_is_refused(setup, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    d, starter, keys = setup
    dl = _dead_letter_of(d, r, keys, {"id": "h4", "type": "customer.activity", **BASE,
                                      "ts": "9999-12-31T00:00:00+00:00",
                                      "payload": '{"customer_id":"42","logins_30d":1,'
                                                 '"active_days_30d":1}'})
    assert "'ts'" in dl.reason and "future" in dl.reason and starter.started == []


@pytest.mark.parametrize("forged", [{"route": "probe-c"}, {"replay": "1-0"},
                                    {"replay": "1-0", "route": "probe"}])
def test_a_producer_cannot_set_route_or_replay(setup, r: redis.Redis,  # type: ignore[no-untyped-def]
                                               forged: dict[str, str]) -> None:
    d, starter, keys = setup
    dl = _dead_letter_of(d, r, keys, {"id": "h5", "type": "customer.activity", **BASE,
                                      "payload": '{"customer_id":"42","logins_30d":1,'
                                                 '"active_days_30d":1}', **forged})
    assert "replay/route" in dl.reason and "mesh dlq replay" in dl.reason
    assert starter.started == []


def test_a_published_event_with_an_ordinary_number_still_runs(setup, r: redis.Redis,  # type: ignore[no-untyped-def]
                                                              settings: MeshSettings) -> None:
    from worker_mesh.events.catalog import CustomerUpdated

    d, _starter, keys = setup
    Publisher(r, settings.streams, keys).publish(CustomerUpdated(customer_id="42", mrr=12.5, seats=3))
    for _ in range(3):
        d.step()
    assert DeadLetters(r, keys, settings.streams).count() == 0
