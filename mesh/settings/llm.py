"""LLM provider settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class LlmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    provider: Literal["template", "openai"] = "template"
    """``template``: offline and deterministic (default); ``openai``: any
    OpenAI-compatible chat-completions endpoint."""
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    """Whole-request timeout of one chat-completions call (connect, send, read)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Connect timeout of one call; a provider that does not answer is a ProviderError."""
    max_output_chars: int = Field(default=20_000, ge=100)
    """Longest generated text accepted; longer output is cut at a sentence end."""
    temperature: float = Field(default=0.4, ge=0, le=2)
    """Sampling temperature sent to the OpenAI-compatible provider."""
    max_tokens: int = Field(default=1200, ge=16)
    """``max_tokens`` sent to the OpenAI-compatible provider."""
