"""Size limits on every input, each with an error that says which limit and setting.

Event payloads (publish and the dispatcher's decode), event fields (the models), the
content to embed, and generated text (also when a provider answers with far more than
asked for).
"""

from __future__ import annotations

import json

import httpx
import pytest
import redis
from pydantic import SecretStr, ValidationError

from worker_mesh.events.catalog import ContentCreated, CustomerActivity
from worker_mesh.events.publisher import Publisher
from worker_mesh.events.wire import decode
from worker_mesh.mesh.errors import PayloadTooLarge
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.content.prompt import Brief
from worker_mesh.workers.content.providers import (
    GenerationRequest,
    OpenAICompatibleProvider,
    TemplateProvider,
)
from worker_mesh.workers.embedding.chunking import ContentTooLarge, chunk_text


def test_publish_rejects_an_oversized_payload_before_sending(settings: MeshSettings,
                                                             r: redis.Redis) -> None:
    s = MeshSettings.load({**settings.to_env(), "MESH_STREAMS_MAX_PAYLOAD_BYTES": "4096"})
    keys = Keys(s.redis.key_prefix)
    pub = Publisher(r, s.streams, keys)
    big = ContentCreated(content_id="c1", title="t", body="x" * 10_000)
    with pytest.raises(PayloadTooLarge, match=r"limit is 4096 \(streams.max_payload_bytes\)"):
        pub.publish(big)
    ok = CustomerActivity(customer_id="1", logins_30d=1, active_days_30d=1)
    with pytest.raises(PayloadTooLarge):  # one bad event fails the batch before any is sent
        pub.publish_many([ok, big])
    assert not r.exists(keys.stream(0))


def test_the_dispatcher_side_rejects_oversized_entries_too() -> None:
    fields = {b"id": b"x", b"type": b"content.created", b"v": b"1", b"ts": b"2026-01-01T00:00:00Z",
              b"payload": json.dumps({"content_id": "c", "title": "t", "body": "y" * 9000}).encode()}
    with pytest.raises(PayloadTooLarge, match="limit is 4096"):
        decode(fields, 4096)


def test_event_fields_have_bounds() -> None:
    with pytest.raises(ValidationError, match="at most 200000 characters"):
        ContentCreated(content_id="c1", title="t", body="x" * 200_001)
    with pytest.raises(ValidationError, match="at most 500 characters"):
        ContentCreated(content_id="c1", title="t" * 501, body="b")


def test_content_to_embed_is_bounded() -> None:
    with pytest.raises(ContentTooLarge, match="MESH_WORKFLOWS_MAX_CONTENT_CHARS"):
        chunk_text("word " * 1000, chunk_chars=800, overlap_chars=100, max_chars=4000)


def _request() -> GenerationRequest:
    return GenerationRequest(Brief(content_id="c1", kind="article", topic="Onboarding",
                                   keywords=["setup"], min_words=50))


def test_generated_text_is_bounded_even_when_the_provider_floods() -> None:
    assert len(TemplateProvider(max_output_chars=300).generate(_request()).text) <= 300
    flood = "A sentence. " * 100_000  # ~1.2 MB completion

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": flood}}]})

    p = OpenAICompatibleProvider("http://llm.test/v1", "m", SecretStr("k"), max_output_chars=2000,
                                 transport=httpx.MockTransport(handler))
    out = p.generate(_request())
    assert 0 < len(out.text) <= 2000 and out.text.endswith(".")
