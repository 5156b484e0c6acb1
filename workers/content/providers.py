"""Text generation providers behind one small protocol.

* ``TemplateProvider`` (default): offline and deterministic, so the demo and the tests
  need no key. It writes plain, readable text that covers the brief's keywords and it
  honours the feedback of failed checks (adds words, removes banned phrases, adds
  missing keywords).
* ``OpenAICompatibleProvider``: ``POST {base_url}/chat/completions`` over httpx (OpenAI,
  vLLM, Ollama...). HTTP outcomes are translated here, at the adapter boundary::

      429            -> RateLimited(delay_s=Retry-After)     retried after that delay
      5xx, timeout,
      connection     -> ProviderError                        retried with backoff
      401, 403       -> ConfigError                          not retried (fix the key)
      other 4xx      -> PermanentError                       not retried

  The API key is a ``SecretStr``, sent only in the request header; it is in no repr,
  log line or error message.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from worker_mesh.mesh import redact
from worker_mesh.mesh.errors import ConfigError, PermanentError, ProviderError, RateLimited
from worker_mesh.mesh.settings import LlmSettings
from worker_mesh.workers.content.prompt import Brief, messages
from worker_mesh.workers.content.seo import contains_phrase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    brief: Brief
    attempt: int = 1
    feedback: list[str] = field(default_factory=list)
    """Readable feedback from the previous attempt's failed checks."""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """The failed checks themselves (``name`` and ``data``), for providers that can
    act on them directly (the template provider)."""
    banned: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Generation:
    title: str
    text: str
    provider: str
    model: str
    tokens_used: int | None = None
    """Total tokens the provider reported (OpenAI ``usage.total_tokens``); None when
    it reports none (the rate limiter then keeps its estimate)."""

    @property
    def model_version(self) -> str:
        return f"{self.provider}:{self.model}"


class Provider(Protocol):
    name: str

    def generate(self, req: GenerationRequest) -> Generation:
        """Write the text; raises TransientError (retry) or PermanentError."""
        ...

    def estimate_tokens(self, req: GenerationRequest) -> int:
        """An upper estimate of the tokens one call uses (prompt + max output), what the
        rate limiter reserves until the call reports its real usage."""
        ...


CHARS_PER_TOKEN = 3
"""Conservative: English runs about 4 characters per token, so prompt chars / 3
over-estimates the prompt (reconciliation gives the excess back after the call)."""


def prompt_tokens(msgs: list[dict[str, str]]) -> int:
    """An upper estimate of a chat prompt's tokens (a few per message for the framing)."""
    return sum(len(m.get("content", "")) // CHARS_PER_TOKEN + 4 for m in msgs) + 3


def cut(text: str, max_chars: int) -> str:
    """``text`` cut at the last sentence end before ``max_chars``."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    end = max(head.rfind(". "), head.rfind(".\n"))
    return head[: end + 1] if end > 0 else head


# -- template ------------------------------------------------------------------------
_TIPS = [
    "Start small and pick one goal for the first week.",
    "Write down who owns each step, so nothing waits for a reply.",
    "Check the results every Friday and keep what works.",
    "Ask your team what slows them down, then fix that first.",
    "Use clear names for every project, so people find things fast.",
    "Set a reminder for the tasks that repeat each month.",
    "Share one short update with your team each week.",
    "Keep a list of questions that come up, and answer them in one place.",
    "Try the new setting on a test project before you roll it out.",
    "Turn off the alerts you never read, so the useful ones stand out.",
]


class TemplateProvider:
    """Deterministic text from templates: the same brief and feedback give the same
    text (the wording is picked by a hash of the content id)."""

    name = "template"
    model = "v1"

    def __init__(self, max_output_chars: int = 20_000) -> None:
        self.max_output_chars = max_output_chars

    def __repr__(self) -> str:
        return "TemplateProvider()"

    def estimate_tokens(self, req: GenerationRequest) -> int:
        return 0  # offline: costs nothing

    def generate(self, req: GenerationRequest) -> Generation:
        b = req.brief
        failed = {c.get("name"): c.get("data", {}) for c in req.failed}
        avoid = list(failed.get("banned_phrases", {}).get("found", []))
        rng = random.Random(int(hashlib.sha256(b.content_id.encode()).hexdigest()[:8], 16))
        topic = b.topic
        paras: list[str] = []
        if b.kind == "retention":
            paras.append(f"Hi there. We noticed your team used the product less in the last "
                         "few weeks. We want to help you get more from "
                         f"{f'your {b.plan} plan' if b.plan else 'your plan'}.")
        else:
            paras.append(f"{topic}. This guide is for {b.audience}. It shows the steps "
                         "that matter most, in plain words.")
        for kw in b.keywords:
            paras.append(f"Let us talk about {kw}. Good {kw} saves time for the whole team. "
                         f"Most people get the best results from {kw} when they start "
                         "with one clear goal.")
        if b.kind == "retention":
            paras.append("Our support team can set up a short call this week. We can look at "
                         "your account together and show you the features that save the "
                         "most time.")
        tips = _TIPS[:]
        rng.shuffle(tips)
        extra_words = 25 if "length" in failed else 0
        i = 0
        while _count(paras) < b.min_words + extra_words and i < 4 * len(tips):
            paras.append(" ".join(tips[(i + j) % len(tips)] for j in range(3)))
            i += 3
        closing = ("Reply to this email and we will help you right away. Thank you for "
                   "being with us." if b.kind == "retention" else
                   "That is all you need to begin. Come back to this guide when you "
                   "plan the next step.")
        paras.append(closing)
        text = "\n\n".join(paras)
        for phrase in avoid:
            text = _remove(text, phrase)
        title = topic
        for phrase in avoid:
            title = _remove(title, phrase).strip(" :-") or "Update"
        return Generation(title, cut(text, self.max_output_chars), self.name, self.model)


def _count(paras: list[str]) -> int:
    return sum(len(p.split()) for p in paras)


def _remove(text: str, phrase: str) -> str:
    import re

    if not contains_phrase(text, phrase):
        return text
    pattern = r"(?<![A-Za-z0-9])" + r"\s+".join(map(re.escape, phrase.split())) + r"(?![A-Za-z0-9])"
    out = re.sub(pattern, "", text, flags=re.IGNORECASE)
    return re.sub(r"[ \t]{2,}", " ", out).replace(" .", ".")


# -- OpenAI-compatible ---------------------------------------------------------------
def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAICompatibleProvider:
    """Chat completions over HTTP; one ``httpx.Client`` (connection pool) per process."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: SecretStr | None, *,
                 timeout_s: float = 30.0, connect_timeout_s: float = 5.0,
                 temperature: float = 0.4, max_tokens: int = 1200,
                 max_output_chars: int = 20_000,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        if api_key is not None:  # masked wherever it might leave (settings do it too)
            redact.remember([api_key.get_secret_value()])
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_output_chars = max_output_chars
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), transport=transport)

    @classmethod
    def from_settings(cls, s: LlmSettings) -> OpenAICompatibleProvider:
        return cls(s.base_url, s.model, s.api_key, timeout_s=s.timeout_s,
                   connect_timeout_s=s.connect_timeout_s, temperature=s.temperature,
                   max_tokens=s.max_tokens, max_output_chars=s.max_output_chars)

    def __repr__(self) -> str:
        return (f"OpenAICompatibleProvider(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key={'set' if self._api_key else 'unset'})")

    def close(self) -> None:
        self._client.close()

    def estimate_tokens(self, req: GenerationRequest) -> int:
        return prompt_tokens(messages(req.brief, req.feedback, req.banned)) + self.max_tokens

    def generate(self, req: GenerationRequest) -> Generation:
        body = {"model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "messages": messages(req.brief, req.feedback, req.banned)}
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        url = f"{self.base_url}/chat/completions"
        try:
            resp = self._client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderError(f"LLM provider timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ProviderError(f"cannot reach the LLM provider: {type(exc).__name__}") from None
        status = resp.status_code
        if status == 429:
            delay = parse_retry_after(resp.headers.get("retry-after"))
            raise RateLimited(f"LLM provider rate-limited the request (429, Retry-After "
                              f"{resp.headers.get('retry-after', '-')})", delay_s=delay)
        if status >= 500 or status == 408:
            raise ProviderError(f"LLM provider failed: HTTP {status} {_excerpt(resp)}")
        if status in (401, 403):
            raise ConfigError(f"LLM provider refused the API key (HTTP {status}); "
                              "check MESH_LLM_API_KEY")
        if status >= 400:
            raise PermanentError(f"LLM provider rejected the request: HTTP {status} "
                                 f"{_excerpt(resp)}")
        try:
            data = resp.json()
            text = str(data["choices"][0]["message"]["content"]).strip()
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError("LLM provider answered 200 without a chat completion") from None
        if not text:
            raise ProviderError("LLM provider returned an empty completion")
        return Generation(req.brief.topic, cut(text, self.max_output_chars), self.name,
                          str(data.get("model") or self.model), _usage(data))


def _usage(data: Any) -> int | None:
    """``usage.total_tokens`` (or prompt + completion) of an OpenAI-style answer."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    try:
        if usage.get("total_tokens") is not None:
            return max(int(usage["total_tokens"]), 0)
        return max(int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0), 0)
    except (TypeError, ValueError):
        return None


def _excerpt(resp: httpx.Response, n: int = 200) -> str:
    """The start of an error body, on one line, masked (``mesh.redact``): a provider may
    echo the request's Authorization header, i.e. the key, in its error body."""
    try:
        body = " ".join(resp.text.split())
    except Exception:  # pragma: no cover - undecodable body
        return ""
    return redact.text(body)[:n]


def make_provider(s: LlmSettings) -> Provider:
    if s.provider == "openai":
        return OpenAICompatibleProvider.from_settings(s)
    return TemplateProvider(s.max_output_chars)
