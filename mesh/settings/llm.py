"""LLM provider settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class LlmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["template", "openai"] = "template"
    """``template``: offline and deterministic (default); ``openai``: any
    OpenAI-compatible chat-completions endpoint."""
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_output_chars: int = Field(default=20_000, ge=100)
