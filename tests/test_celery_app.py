"""The Celery app's guarantees: JSON only, late acks, bounded prefetch, visibility
timeout, task events, counter-based chords; and a pickled message pushed onto a queue
is refused by a real worker, never executed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support.procs import start, wait_for
from worker_mesh.gpu_pool.routing import ALL_QUEUES
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app


def _settings(url: str = "redis://127.0.0.1:1/0") -> MeshSettings:
    return MeshSettings.load({"MESH_REDIS_URL": url, "MESH_REDIS_KEY_PREFIX": "capp",
                              "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]'})


def test_json_only_everywhere() -> None:
    conf = create_app(_settings()).conf
    assert conf.task_serializer == conf.result_serializer == conf.event_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]


def test_delivery_guarantees() -> None:
    s = _settings()
    conf = create_app(s).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == s.celery.prefetch_multiplier <= 4
    vt = conf.broker_transport_options["visibility_timeout"]
    assert vt > conf.task_time_limit >= conf.task_soft_time_limit


def test_visibility_queues_and_key_prefix() -> None:
    app = create_app(_settings())
    conf = app.conf
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert {q.name for q in conf.task_queues} == set(ALL_QUEUES) == {"cpu", "io", "gpu", "gpu-batch"}
    assert conf.broker_transport_options["global_keyprefix"] == Keys("capp").celery_prefix()
    assert conf.result_backend.startswith("redis://")
    # Redis backend chords count their parts; no chord_unlock polling task.
    assert type(app.backend).__name__ == "RedisBackend" and app.backend.supports_native_join


def test_dispatcher_tasks_are_registered() -> None:
    app = create_app(_settings())
    assert {"mesh.run.finished", "mesh.dlq.workflow_failed", "mesh.probe.record"} <= set(app.tasks)


@pytest.mark.integration
@pytest.mark.e2e
def test_a_pickled_message_is_refused_never_executed(redis_server: EmbeddedRedis,
                                                     tmp_path: Path) -> None:
    s = MeshSettings.load({"MESH_REDIS_URL": redis_server.url,
                           "MESH_REDIS_KEY_PREFIX": "p" + uuid.uuid4().hex[:8],
                           "MESH_CELERY_EXTRA_MODULES": '["tests.support.probe_tasks"]'})
    keys = Keys(s.redis.key_prefix)
    r = make_client(s.redis)
    app = create_app(s)
    runs = keys.ns("probe", "runs")
    meta = {"run_id": "evil", "workflow": "probe", "workflow_version": "1"}
    # Given a message serialized with pickle on the cpu queue, then a normal JSON one
    msg = app.amqp.create_task_message("evil-1", "mesh.probe.record",
                                       (meta, {"event_id": "evil", "type": "x", "key": "evil"}), {})
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        producer.publish(msg.body, serializer="pickle", headers=msg.headers, exchange="",
                         routing_key="cpu", **msg.properties)
    raw = r.lrange(keys.celery_prefix() + "cpu", 0, -1)
    assert json.loads(raw[0])["content-type"] == "application/x-python-serialize"
    app.signature("mesh.probe.record", args=(meta | {"run_id": "good"},
                                              {"event_id": "good", "type": "x", "key": "good"}),
                  queue="cpu").apply_async()
    worker = start("worker", ["worker", "-Q", "cpu", "-c", "1", "--pool", "solo"], s, tmp_path / "logs")
    try:
        # When the worker has handled the JSON message (queued after the pickled one)
        wait_for(lambda: r.llen(runs) >= 1, 60, what="the JSON task to run")
        wait_for(lambda: r.llen(keys.celery_prefix() + "cpu") == 0, 30, what="an empty queue")
        # Then only the JSON task ran, and the worker said why it refused the other
        assert [json.loads(x)["meta"]["run_id"] for x in r.lrange(runs, 0, -1)] == ["good"]
        wait_for(lambda: "ContentDisallowed" in worker.output(), 30, what="the refusal in the log")
        assert worker.alive()
    finally:
        worker.stop()
