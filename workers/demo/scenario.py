"""A realistic, seeded stream of events for the demo: customers signing up and using
the product (some drifting towards churn), documents written and edited, content
requested by the marketing team."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta

from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.catalog import (
    ContentCreated,
    ContentRequested,
    ContentUpdated,
    CustomerActivity,
    CustomerCreated,
    CustomerUpdated,
    ModelRetrainRequested,
    Plan,
)

TOPICS = [
    ("Getting started with workflow automation", ["automation", "workflow", "setup"]),
    ("Reducing churn with proactive onboarding", ["onboarding", "churn", "retention"]),
    ("How semantic search finds the right answer", ["search", "embeddings", "relevance"]),
    ("Scheduling GPU work for lower cost", ["gpu", "scheduling", "cost"]),
    ("Writing release notes customers read", ["release", "notes", "customers"]),
]

PARAGRAPHS = [
    "Teams adopt the product to replace manual steps that used to take a whole afternoon. "
    "The first week decides whether a new account builds a habit or drifts away.",
    "Search quality depends on fresh embeddings: when a document changes, only the changed "
    "paragraphs need new vectors, which keeps the index current without re-processing everything.",
    "Support tickets and failed payments are early signals. A customer who logs in less and "
    "opens more tickets is asking for help, even when nobody says so.",
    "Bulk work such as rescoring every customer can wait for the night, when GPU capacity is "
    "cheap; urgent work such as a new document goes to the front of the queue.",
    "Every workflow reports when it last succeeded, so a stale result is an alert within "
    "minutes instead of a surprise discovered days later.",
    "Release notes are read when they answer one question: what changed for me? Short "
    "paragraphs, concrete examples and a link to the details work best.",
]


def _doc(rng: random.Random, n: int) -> str:
    return "\n\n".join(rng.choice(PARAGRAPHS) for _ in range(n))


def events(customers: int, documents: int, requests: int, seed: int = 7) -> Iterator[Envelope]:
    """Yield the demo's events in a plausible order (sign-ups, usage, edits, requests)."""
    rng = random.Random(seed)
    today = date(2026, 11, 1)
    plans: list[Plan] = ["free", "starter", "pro", "enterprise"]
    out: list[Event] = []
    for i in range(customers):
        out.append(CustomerCreated(
            customer_id=f"c{i:05d}", plan=rng.choice(plans), seats=rng.randint(1, 200),
            mrr=round(rng.uniform(0, 5000), 2),
            signup_date=today - timedelta(days=rng.randint(5, 900)),
        ))
    for i in range(documents):
        topic, _ = TOPICS[i % len(TOPICS)]
        out.append(ContentCreated(content_id=f"doc{i:04d}", title=f"{topic} (part {i})",
                                  body=_doc(rng, rng.randint(3, 8)), tags=["demo"]))
    for i in range(customers):
        risky = rng.random() < 0.2
        out.append(CustomerActivity(
            customer_id=f"c{i:05d}",
            logins_30d=rng.randint(0, 3) if risky else rng.randint(10, 120),
            active_days_30d=rng.randint(0, 2) if risky else rng.randint(8, 30),
            support_tickets_30d=rng.randint(3, 9) if risky else rng.randint(0, 2),
            failed_payments_90d=rng.randint(1, 3) if risky else 0,
        ))
        if risky:
            out.append(CustomerUpdated(customer_id=f"c{i:05d}", nps=rng.randint(0, 4), version=2))
    for i in range(0, documents, 3):
        out.append(ContentUpdated(content_id=f"doc{i:04d}", title=f"{TOPICS[i % len(TOPICS)][0]} (rev 2)",
                                  body=_doc(rng, rng.randint(3, 8)), version=2, tags=["demo"]))
    for i in range(requests):
        topic, keywords = TOPICS[i % len(TOPICS)]
        out.append(ContentRequested(content_id=f"gen{i:04d}", topic=topic, keywords=keywords))
    # Retrain on demand: a candidate is trained, compared with the promoted model on
    # the same held-out set, promoted only if not worse (then all customers are rescored
    # as bulk GPU work, which waits for the off-peak window).
    out.append(ModelRetrainRequested(reason="demo", samples=1500))
    for ev in out:
        yield Envelope.wrap(ev, producer="demo")
