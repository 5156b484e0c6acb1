"""The content steps against a real redis-server, without a broker: feedback retries,
dead-lettering after the last attempt, idempotent storing and publishing."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.wire import decode
from worker_mesh.mesh.errors import QualityCheckFailed, RateLimited
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.content import pipeline
from worker_mesh.workers.content.providers import Generation, GenerationRequest, TemplateProvider
from worker_mesh.workers.content.store import ContentStore
from worker_mesh.workers.runtime import Runtime

META = {"run_id": "run-1", "workflow": "content", "workflow_version": "1"}
WIRE = {"id": "ev-1", "type": "content.requested", "v": "1", "key": "content:g1",
        "payload": '{"content_id":"g1","topic":"t"}'}


def rt_for(settings: MeshSettings) -> Runtime:
    return Runtime(settings)


def requested(settings: MeshSettings, **payload: Any) -> dict[str, Any]:
    return pipeline.prepare(settings, "content.requested",
                            {"content_id": "g1", "topic": "Onboarding new teams"} | payload, "ev-1")


def test_good_content_passes_on_the_first_attempt_and_is_published(
        settings: MeshSettings, r: redis.Redis) -> None:
    rt = rt_for(settings)
    draft = pipeline.generate(rt, requested(settings, keywords=["onboarding"]), META, WIRE)
    assert draft["attempts"] == 1 and draft["seo"]["passed"]
    assert draft["model_version"] == "template:v1"
    res = pipeline.publish(rt, draft, META)
    assert (res["version"], res["created"]) == (1, True)
    stored = ContentStore(r, rt.keys).get("g1")
    assert stored is not None and stored["body"] == draft["body"]
    assert stored["workflow_version"] == "1" and stored["event_id"] == "ev-1"
    assert stored["model_version"] == "template:v1" and stored["run_id"] == "run-1"
    (entry,) = r.xrange(rt.keys.stream(0))
    env = decode(entry[1], settings.streams.max_payload_bytes)
    assert env.type == "content.updated" and env.payload.source == "generated"  # type: ignore[attr-defined]
    assert env.payload.version == 1 and env.producer == "mesh.content"  # type: ignore[attr-defined]


def test_a_redelivered_publish_adds_no_version_and_reuses_the_event_identity(
        settings: MeshSettings, r: redis.Redis) -> None:
    rt = rt_for(settings)
    draft = pipeline.generate(rt, requested(settings), META, WIRE)
    first = pipeline.publish(rt, draft, META)
    again = pipeline.publish(rt, draft, META)
    assert (again["version"], again["created"]) == (1, False)
    assert again["published_event_id"] == first["published_event_id"]
    other = pipeline.publish(rt, draft, META | {"run_id": "run-2"})
    assert other["version"] == 2 and ContentStore(r, rt.keys).versions("g1") == 2
    idems = {f[b"idem"] for _, f in r.xrange(rt.keys.stream(0))}
    assert idems == {b"g1:generated:v1", b"g1:generated:v2"}


def test_failed_checks_are_retried_with_feedback_until_they_pass(settings: MeshSettings) -> None:
    rt = rt_for(settings)
    draft = pipeline.generate(rt, requested(settings, topic="Buy now: our pricing explained",
                                            keywords=["pricing"]), META, WIRE)
    assert draft["attempts"] == 2
    assert draft["feedback_history"] == [["remove banned phrases: 'buy now'"]]
    assert "buy now" not in (draft["title"] + draft["body"]).lower()


def test_content_that_keeps_failing_is_dead_lettered_once_with_the_reason(
        settings: MeshSettings, r: redis.Redis) -> None:
    rt = rt_for(settings)
    brief = requested(settings, keywords=["click here"])  # a keyword that is also banned
    with pytest.raises(QualityCheckFailed, match="3 times"):
        pipeline.generate(rt, brief, META, WIRE)
    with pytest.raises(QualityCheckFailed):  # a redelivery: no new attempt, no new DLQ entry
        pipeline.generate(rt, brief, META, WIRE)
    (dl,) = DeadLetters(r, rt.keys, settings.streams).list()
    assert dl.reason_code == "quality_failed" and dl.source == "mesh.content.generate"
    assert "click here" in dl.reason and dl.fields == WIRE and dl.type == "content.requested"
    assert len(pipeline.Attempts(rt, "run-1").load()) == settings.workflows.content_max_attempts


class FlakyProvider:
    """Writes too little first, is rate-limited once, then follows the feedback."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls: list[GenerationRequest] = []
        self.template = TemplateProvider()

    def generate(self, req: GenerationRequest) -> Generation:
        self.calls.append(req)
        if len(self.calls) == 1:
            return Generation("t", "Too short.", "flaky", "m")
        if len(self.calls) == 2:
            raise RateLimited("429", delay_s=1.0)
        return self.template.generate(req)


def test_a_provider_error_resumes_at_the_same_attempt_with_the_same_feedback(
        settings: MeshSettings) -> None:
    rt = rt_for(settings)
    flaky = FlakyProvider()
    brief = requested(settings)
    with pytest.raises(RateLimited):
        pipeline.generate(rt, brief, META, WIRE, provider=flaky)
    draft = pipeline.generate(rt, brief, META, WIRE, provider=flaky)  # the task's retry
    assert draft["attempts"] == 2
    assert [c.attempt for c in flaky.calls] == [1, 2, 2]
    assert flaky.calls[2].feedback == flaky.calls[1].feedback
    assert any("too short" in f for f in flaky.calls[2].feedback)


def test_a_high_risk_customer_gets_a_retention_message(settings: MeshSettings,
                                                       r: redis.Redis) -> None:
    rt = rt_for(settings)
    brief = pipeline.prepare(settings, "churn.high_risk",
                             {"customer_id": "c42", "score": 0.91, "model_version": "m1",
                              "plan": "pro"}, "ev-9")
    assert brief["content_id"] == "retention-c42" and brief["kind"] == "retention"
    res = pipeline.publish(rt, pipeline.generate(rt, brief, META, WIRE), META)
    stored = ContentStore(r, rt.keys).get("retention-c42")
    assert stored is not None and stored["customer_id"] == "c42" and res["version"] == 1
    assert "pro plan" in stored["body"] and "support" in stored["body"]
