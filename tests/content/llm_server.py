"""A real local HTTP server that speaks (a little) OpenAI chat-completions, for tests.

It answers from a script: each request takes the next ``Reply`` (the last one repeats),
and every request is recorded with its arrival time, headers and JSON body.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: str | None = None
    """Raw body; None: a chat completion holding ``text`` (or an error JSON)."""


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class LlmServer:
    url: str
    seen: list[Seen]


def completion(text: str) -> str:
    return json.dumps({"id": "cmpl-1", "object": "chat.completion", "model": "local-test",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]})


@contextmanager
def llm_server(script: list[Reply] | Callable[[dict[str, Any], int], Reply]) -> Iterator[LlmServer]:
    seen: list[Seen] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            with lock:
                seen.append(Seen(time.monotonic(), self.path, dict(self.headers), body))
                i = len(seen) - 1
            reply = script(body, i) if callable(script) else script[min(i, len(script) - 1)]
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.body is not None:
                payload = reply.body
            elif reply.status == 200:
                payload = completion(reply.text)
            else:
                payload = json.dumps({"error": {"message": f"status {reply.status}"}})
            data = payload.encode()
            try:
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LlmServer(f"http://127.0.0.1:{server.server_address[1]}/v1", seen)
    finally:
        server.shutdown()
        server.server_close()
