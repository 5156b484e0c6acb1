"""A local HTTP server standing in for Sentry: it receives the envelopes the real SDK
sends (``POST /api/<project>/envelope/``) and keeps them for the test to read."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Item:
    type: str
    payload: dict[str, Any]


@dataclass
class Collector:
    server: ThreadingHTTPServer
    raw: list[bytes] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def of_type(self, t: str) -> list[dict[str, Any]]:
        with self.lock:
            return [i.payload for i in self.items if i.type == t]

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"\n".join(self.raw)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_envelope(body: bytes) -> list[Item]:
    """Items of one envelope: a header line, then per item a header line and a payload
    (``length`` bytes when the item header gives it, else up to the next newline)."""
    pos = body.find(b"\n") + 1
    out: list[Item] = []
    while 0 < pos < len(body):
        nl = body.find(b"\n", pos)
        line = body[pos:nl if nl >= 0 else len(body)]
        pos = (nl + 1) if nl >= 0 else len(body)
        if not line.strip():
            continue
        header = json.loads(line)
        length = header.get("length")
        if length is None:
            nl = body.find(b"\n", pos)
            end = nl if nl >= 0 else len(body)
        else:
            end = pos + int(length)
        payload = body[pos:end]
        pos = end + 1
        try:
            out.append(Item(header.get("type", "?"), json.loads(payload)))
        except ValueError:
            out.append(Item(header.get("type", "?"), {}))
    return out


def start() -> Collector:
    holder: dict[str, Collector] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            enc = self.headers.get("Content-Encoding", "")
            if enc == "gzip":
                body = gzip.decompress(body)
            elif enc == "deflate":
                body = zlib.decompress(body)
            c = holder["c"]
            with c.lock:
                c.raw.append(body)
                if self.path.endswith("/envelope/"):
                    c.items.extend(parse_envelope(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["c"] = Collector(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder["c"]
