"""Orders: score every placed order, then follow up on risky ones."""

import os

import httpx

from worker_mesh import API_CALL, Event, RateLimited, Resource, chord, current_step, step, workflow


class OrderPlaced(Event):
    event_type = "order.placed"
    entity_kind = "order"
    entity_field = "order_id"
    order_id: str
    items: list[str]


class OrderScored(Event):
    event_type = "order.scored"
    entity_kind = "order"
    entity_field = "order_id"
    order_id: str
    risk: float


@step
def enrich(order: dict) -> dict:
    return {**order, "n_items": len(order["items"])}


@step(kind=API_CALL, resource=Resource.IO)
def price(order: dict) -> dict:
    r = httpx.post(os.environ["ORDERS_PRICING_URL"], json={"items": order["items"]}, timeout=10)
    if r.status_code == 429:
        raise RateLimited("pricing API: 429", delay_s=float(r.headers.get("Retry-After", 1)))
    r.raise_for_status()
    return {**order, "prices": r.json()["prices"]}


@step
def score_item(order: dict, i: int) -> float:
    return min(1.0, order["prices"][i] / 1000)


@step
def total(risks: list[float], order_id: str) -> float:
    risk = max(risks)
    current_step().store_result("order-risk", order_id, {"risk": risk})
    current_step().publish(OrderScored(order_id=order_id, risk=risk))
    return risk


@step
def review(event: dict) -> str:
    return "escalated" if event["risk"] > 0.5 else "ok"


@workflow("order-scoring", on=["order.placed"], sla_s=3600, results={"order-risk": 86400})
def score_order(order: OrderPlaced):
    items = [score_item.s(i) for i in range(len(order.items))]
    return enrich.s(order.model_dump()) | price.s() | chord(items, total.s(order.order_id))


@workflow("order-review", on=["order.scored"])
def review_order(scored: OrderScored):
    return review.s(scored.model_dump())
