"""The detection benchmark's webhook receiver: the peer Alertmanager notifies. It keeps
every alert of every notification with the time it arrived, for the benchmark to find
the first notification of an alert after an injection."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Notified:
    at: float
    """Unix time the notification arrived."""
    status: str
    """firing or resolved."""
    labels: dict[str, str]

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    got: list[Notified] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def since(self, t0: float, status: str = "firing") -> list[Notified]:
        with self.lock:
            return [n for n in self.got if n.at >= t0 and n.status == status]

    def first(self, t0: float, alertnames: tuple[str, ...], **labels: str) -> Notified | None:
        for n in self.since(t0):
            if n.alertname in alertnames and all(n.labels.get(k) == v for k, v in labels.items()):
                return n
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            try:
                doc: dict[str, Any] = json.loads(body)
            except ValueError:
                self.send_response(400)
                self.end_headers()
                return
            rec = holder["r"]
            with rec.lock:
                for alert in doc.get("alerts", []):
                    rec.got.append(Notified(now, str(alert.get("status")),
                                            dict(alert.get("labels") or {})))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(server)
    threading.Thread(target=server.serve_forever, name="alert-receiver", daemon=True).start()
    return holder["r"]
