"""The orders workflows end to end: a real redis-server, dispatcher and worker (the
worker_mesh test kit), and a fake pricing API that answers 429 twice first."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from orders.workflows import OrderPlaced, enrich, score_item

pytest_plugins = ["worker_mesh.testing"]


class PricingAPI(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
        PricingAPI.calls += 1
        if PricingAPI.calls <= 2:  # rate limited at first
            self.send_response(429)
            self.send_header("Retry-After", "0.2")
            self.end_headers()
            return
        body = json.dumps({"prices": [100.0 * len(item) for item in items]}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), PricingAPI)
threading.Thread(target=server.serve_forever, daemon=True).start()
MESH_MODULES = ["orders.workflows"]
MESH_ENV = {"ORDERS_PRICING_URL": f"http://127.0.0.1:{server.server_address[1]}"}


def test_steps_are_plain_functions() -> None:
    assert enrich({"items": ["a", "b"]})["n_items"] == 2
    assert score_item({"prices": [250.0]}, 0) == 0.25


def test_the_workflow_in_process_retries_and_joins(mesh_eager, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ORDERS_PRICING_URL", MESH_ENV["ORDERS_PRICING_URL"])
    PricingAPI.calls = 0
    result = mesh_eager.run(OrderPlaced(order_id="o-0", items=["pen", "notebook"]))
    assert result["order-scoring"] == 0.8 and PricingAPI.calls == 3  # two 429s retried


@pytest.mark.e2e
def test_an_order_is_scored_after_429s_and_its_review_runs(mesh) -> None:  # type: ignore[no-untyped-def]
    PricingAPI.calls = 0
    runs = mesh.publish_and_wait(OrderPlaced(order_id="o-1", items=["pen", "notebook"]))
    assert runs["order-scoring"].state == "succeeded", (runs, mesh.logs()[-3000:])
    assert runs["order-scoring"].result == 0.8  # "notebook": 8 x 100 / 1000
    assert PricingAPI.calls == 3  # two 429s, then the answer
    assert mesh.wait_idle(60)  # the follow-up order.scored ran order-review
    counts = mesh.ledger.counts()
    assert counts["order-review|succeeded"] == 1 and counts["order-scoring|succeeded"] == 1
    assert mesh.ledger.workflow_stats("order-scoring").retries == 2
    assert mesh.audit_ok()
