"""Providers: the OpenAI-compatible one against a real local HTTP server (error
mapping, Retry-After, timeouts, the key kept secret), the template one offline, and
the API-call retry policy's delays."""

from __future__ import annotations

import logging
import random
from email.utils import formatdate

import pytest
from pydantic import SecretStr

from tests.content.llm_server import Reply, llm_server
from worker_mesh.mesh.errors import ConfigError, PermanentError, ProviderError, RateLimited
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.content.prompt import Brief
from worker_mesh.workers.content.providers import (
    GenerationRequest,
    OpenAICompatibleProvider,
    TemplateProvider,
    make_provider,
    parse_retry_after,
)
from worker_mesh.workers.kinds import API_CALL

KEY = "sk-test-DO-NOT-LEAK-123456"
BRIEF = Brief("g1", "article", "Onboarding new teams", ["onboarding", "checklist"])


def provider(url: str, timeout_s: float = 5.0) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(url, "local-model", SecretStr(KEY), timeout_s=timeout_s,
                                    connect_timeout_s=2.0)


def test_a_completion_is_returned_and_the_request_is_well_formed() -> None:
    with llm_server([Reply(200, "Hello onboarding checklist.")]) as srv:
        gen = provider(srv.url).generate(GenerationRequest(BRIEF, 2, ["too short: 3 words"]))
    assert gen.text == "Hello onboarding checklist."
    assert gen.model_version == "openai:local-test"
    (req,) = srv.seen
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.body["model"] == "local-model"
    user = req.body["messages"][-1]["content"]
    assert "onboarding, checklist" in user and "too short: 3 words" in user


def test_429_maps_to_rate_limited_with_the_retry_after_delay() -> None:
    with llm_server([Reply(429, headers={"Retry-After": "7"})]) as srv, pytest.raises(RateLimited) as exc:
        provider(srv.url).generate(GenerationRequest(BRIEF))
    assert exc.value.delay_s == 7.0


def test_retry_after_as_an_http_date_is_understood() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(("status", "error"), [
    (500, ProviderError), (503, ProviderError), (400, PermanentError), (404, PermanentError),
    (401, ConfigError), (403, ConfigError)])
def test_http_errors_map_to_the_error_tree(status: int, error: type[Exception]) -> None:
    with llm_server([Reply(status)]) as srv, pytest.raises(error) as exc:
        provider(srv.url).generate(GenerationRequest(BRIEF))
    assert KEY not in str(exc.value)
    if error is PermanentError:
        assert not isinstance(exc.value, ConfigError)


def test_timeouts_and_unreachable_servers_are_provider_errors() -> None:
    with (llm_server([Reply(200, "late", delay_s=2.0)]) as srv,
          pytest.raises(ProviderError, match="timed out")):
        provider(srv.url, timeout_s=0.3).generate(GenerationRequest(BRIEF))
    with pytest.raises(ProviderError, match="cannot reach"):
        provider("http://127.0.0.1:9/v1").generate(GenerationRequest(BRIEF))


def test_a_malformed_answer_is_a_provider_error() -> None:
    with (llm_server([Reply(200, body='{"choices": []}')]) as srv,
          pytest.raises(ProviderError, match="without a chat completion")):
        provider(srv.url).generate(GenerationRequest(BRIEF))


def test_the_key_is_in_no_repr_and_no_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = MeshSettings.load({"MESH_LLM_PROVIDER": "openai", "MESH_LLM_API_KEY": KEY})
    p = make_provider(s.llm)
    assert isinstance(p, OpenAICompatibleProvider)
    assert KEY not in repr(p) and KEY not in repr(s) and KEY not in str(s.llm)
    with llm_server([Reply(500), Reply(200, "ok")]) as srv:
        p2 = provider(srv.url)
        with pytest.raises(ProviderError):
            p2.generate(GenerationRequest(BRIEF))
        p2.generate(GenerationRequest(BRIEF))
    assert KEY not in caplog.text


def test_api_call_delays_follow_retry_after_then_exponential_backoff() -> None:
    rng = random.Random(1)
    assert API_CALL.delay_s(0, hint_s=7.0, rng=rng) == 7.0
    assert API_CALL.delay_s(3, hint_s=0.0, rng=rng) == 0.0
    assert API_CALL.delay_s(0, hint_s=3600.0) == API_CALL.backoff_max_s  # capped
    for n in range(6):
        ceiling = min(API_CALL.backoff_max_s, API_CALL.backoff_s * 2 ** n)
        delays = [API_CALL.delay_s(n, None, rng=rng) for _ in range(200)]
        assert all(API_CALL.backoff_s / 2 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # full jitter uses the whole range


def test_template_provider_is_deterministic_and_honours_feedback() -> None:
    brief = Brief("g9", "article", "Buy now: pricing explained", ["pricing"], min_words=60)
    p = TemplateProvider()
    a = p.generate(GenerationRequest(brief))
    assert a == p.generate(GenerationRequest(brief))
    assert "buy now" in (a.title + a.text).lower()
    b = p.generate(GenerationRequest(brief, 2, ["remove banned phrases: 'buy now'"],
                                     [{"name": "banned_phrases", "data": {"found": ["buy now"]}}]))
    assert "buy now" not in (b.title + b.text).lower()
    longer = p.generate(GenerationRequest(brief, 2, ["too short"],
                                          [{"name": "length", "data": {}}]))
    assert len(longer.text.split()) > len(a.text.split())
