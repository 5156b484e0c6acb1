"""What to write: a ``Brief`` built from the triggering event, and the chat messages an
LLM gets for it (with the feedback of failed quality checks on later attempts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from worker_mesh.mesh.errors import InvalidEvent
from worker_mesh.mesh.settings import MeshSettings

Kind = Literal["article", "retention"]


@dataclass(frozen=True)
class Brief:
    """Everything a provider needs to write one piece of content (JSON-serialisable,
    so it travels between tasks)."""

    content_id: str
    kind: Kind
    topic: str
    keywords: list[str] = field(default_factory=list)
    audience: str = "customers"
    min_words: int = 120
    customer_id: str | None = None
    plan: str | None = None
    event_id: str = ""
    priority: str = "normal"
    """urgent / normal / bulk: the step's place in the LLM budget's line."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Brief:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def brief_from_event(settings: MeshSettings, event_type: str, payload: dict[str, Any],
                     event_id: str = "") -> Brief:
    """``content.requested`` -> an article; ``churn.high_risk`` -> a retention message
    for that customer (its content id is ``retention-<customer id>``)."""
    if event_type == "content.requested":
        return Brief(
            content_id=payload["content_id"], kind="article", topic=payload["topic"],
            keywords=list(payload.get("keywords") or []),
            audience=payload.get("audience") or "customers",
            min_words=int(payload.get("min_words") or 120), event_id=event_id,
            customer_id=payload.get("customer_id"), priority=payload.get("priority") or "normal",
        )
    if event_type == "churn.high_risk":
        plan = payload.get("plan")
        plan_words = f"your {plan} plan" if plan else "your plan"
        return Brief(
            content_id=f"retention-{payload['customer_id']}", kind="retention",
            topic=f"Getting more value from {plan_words}",
            keywords=[f"{plan} plan" if plan else "your plan", "support"],
            audience="an existing customer who uses the product less than before",
            min_words=settings.workflows.retention_min_words,
            customer_id=payload["customer_id"], plan=plan, event_id=event_id,
        )
    raise InvalidEvent(f"content generation does not handle {event_type!r}", field="type")


def messages(brief: Brief, feedback: list[str], banned: list[str]) -> list[dict[str, str]]:
    """Chat-completions messages for the brief; ``feedback`` lists what the previous
    attempt got wrong, so the model can fix exactly that."""
    what = ("a short, friendly retention email" if brief.kind == "retention"
            else "a clear, helpful article")
    rules = [
        f"Write {what} about: {brief.topic}.",
        f"Audience: {brief.audience}.",
        f"At least {brief.min_words} words, in plain paragraphs separated by blank lines.",
        "Use short sentences and everyday words.",
    ]
    if brief.keywords:
        rules.append("Use each of these phrases literally: " + ", ".join(brief.keywords) + ".")
    if banned:
        rules.append("Never use these phrases: " + ", ".join(banned) + ".")
    user = "\n".join(f"- {r}" for r in rules)
    if feedback:
        user += "\n\nYour previous draft failed these checks; fix them:\n" + "\n".join(
            f"- {f}" for f in feedback)
    return [
        {"role": "system", "content": "You write marketing and help-centre content. "
                                      "Answer with the text only, no preamble."},
        {"role": "user", "content": user},
    ]
