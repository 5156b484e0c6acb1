"""One event, one trace: the publish, the dispatcher's start of the run and every step
in the worker are spans of one OpenTelemetry trace, parented across the three
processes, exported over OTLP/HTTP to a receiver written for the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.runs.flows import PRODUCER
from tests.runs.otlp_receiver import OtlpReceiver
from tests.support.procs import start, wait_for
from worker_mesh.chains.registry import RUN_NAMESPACE
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import ContentDeleted
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh import tracing
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings, TracingSettings

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rec:
        yield rec


def test_one_event_is_one_trace_with_a_span_per_step(
        redis_server: EmbeddedRedis, receiver: OtlpReceiver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = MeshSettings.load({
        "MESH_REDIS_URL": redis_server.url, "MESH_REDIS_KEY_PREFIX": "tr" + uuid.uuid4().hex[:8],
        "MESH_DISPATCHER_BLOCK_MS": "50", "MESH_CELERY_EXTRA_MODULES": '["tests.runs.flows"]',
        "MESH_WORKFLOWS_BUILTIN": "false",
        "MESH_TRACING_ENABLED": "true", "MESH_TRACING_OTLP_ENDPOINT": receiver.endpoint,
        "MESH_TRACING_EXPORT_DELAY_MS": "100",
    })
    procs = [start("worker", ["worker", "-Q", "io", "-c", "1", "--pool", "threads"], s, tmp_path),
             start("dispatcher", ["dispatcher"], s, tmp_path)]
    r = make_client(s.redis)
    tracing.configure(s.tracing, "producer")
    try:
        eid = Publisher(r, s.streams, Keys(s.redis.key_prefix)).publish(
            Envelope.wrap(ContentDeleted(content_id="slow-0-t"), producer=PRODUCER))
        tracing.shutdown()  # flush the publish span
        run_id = str(uuid.uuid5(RUN_NAMESPACE, f"runs-slow:{eid}"))
        led = RunLedger(r, Keys(s.redis.key_prefix), s.runs)
        wait_for(lambda: led.get_field(run_id, "state") == "succeeded", 90, what="the run done")
        names = {"publish content.deleted", "run runs-slow", "step first", "step second"}
        wait_for(lambda: names <= {sp.name for sp in receiver.spans}, 30, what="the four spans")
    finally:
        for p in procs:
            p.stop()
        tracing.configure(TracingSettings(), "producer")
    by_name = {sp.name: sp for sp in receiver.spans}
    pub, run = by_name["publish content.deleted"], by_name["run runs-slow"]
    steps = [by_name["step first"], by_name["step second"]]
    assert {sp.trace_id for sp in (pub, run, *steps)} == {pub.trace_id}  # one trace
    assert pub.parent_id == "" and run.parent_id == pub.span_id
    assert all(sp.parent_id == run.span_id for sp in steps)
    assert (pub.service, run.service, steps[0].service) == (
        "worker-mesh-producer", "worker-mesh-dispatcher", "worker-mesh-worker")
    assert run.attributes["mesh.run_id"] == steps[0].attributes["mesh.run_id"] == run_id
    assert steps[1].attributes["mesh.state"] == "SUCCESS"
    assert pub.trace_id in str(led.get_field(run_id, "trace"))  # kept on the run record
    assert len([sp for sp in receiver.spans if sp.trace_id == pub.trace_id]) == 4


def test_tracing_is_off_by_default_and_adds_nothing_to_the_wire(settings: MeshSettings, r) -> None:  # type: ignore[no-untyped-def]
    assert not settings.tracing.enabled
    tracing.configure(settings.tracing, "producer")
    assert not tracing.enabled() and tracing.span_now("x") is None
    Publisher(r, settings.streams, Keys(settings.redis.key_prefix)).publish(
        ContentDeleted(content_id="quiet"))
    [(_, fields)] = r.xrange(Keys(settings.redis.key_prefix).stream(0))
    assert b"traceparent" not in fields
