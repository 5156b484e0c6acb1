"""A local OpenAI-compatible chat-completions server that enforces a rate limit, for the
flow-control tests and ``benchmarks/bench_ratelimit.py``.

Like a real provider it counts requests and tokens (prompt + completion, reported in
``usage``) over a sliding window and answers 429 with ``Retry-After`` (whole seconds)
beyond either limit. It writes text that passes the content checks of the brief in the
prompt (its keywords, at least its word count), a little longer for some topics so
the token cost varies, and records every call: arrival, end, tokens, status and the
prompt's topic (tests put the customer or tenant in it).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TOPIC = re.compile(r"about: (.*?)\.\n")
_WORDS = re.compile(r"At least (\d+) words")
_KEYWORDS = re.compile(r"Use each of these phrases literally: (.*)\.\n")


@dataclass
class Call:
    at: float
    """Arrival (time.time())."""
    topic: str
    tokens: int
    status: int
    end: float = 0.0


def write(user_prompt: str) -> tuple[str, str]:
    """(topic, text) for a content prompt: short plain sentences with every keyword."""
    topic = (_TOPIC.search(user_prompt) or [None, "the product"])[1]
    words = int((_WORDS.search(user_prompt) or [None, "30"])[1])
    kws_match = _KEYWORDS.search(user_prompt)
    keywords = [k.strip() for k in kws_match[1].split(", ")] if kws_match else []
    words += zlib.crc32(topic.encode()) % 25  # some answers run longer: tokens vary
    parts = [f"This note is about {topic}."]
    parts += [f"Good {kw} work saves time for the whole team." for kw in keywords]
    filler = ["Start with one small goal.", "Keep the steps short and clear.",
              "Ask your team what helps.", "Check the results each week."]
    i = 0
    while sum(len(p.split()) for p in parts) < words:
        parts.append(filler[i % len(filler)])
        i += 1
    return topic, " ".join(parts)


def tokens_of(text: str) -> int:
    return math.ceil(len(text) / 4)


@dataclass
class LimitedLlm:
    rpm: int = 120
    tpm: int = 20_000
    interval_s: float = 60.0
    delay_s: Callable[[str, int], float] = lambda topic, n: 0.0
    """Extra answer time for the n-th call (0-based) with this topic."""
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _window: deque[tuple[float, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def accepted(self) -> list[Call]:
        return [c for c in self.calls if c.status == 200]

    @property
    def rejected(self) -> int:
        return sum(1 for c in self.calls if c.status == 429)

    def admit(self, now: float, tokens: int) -> float:
        """0 when the call fits the window (and is counted), else seconds to wait."""
        with self._lock:
            while self._window and self._window[0][0] <= now - self.interval_s:
                self._window.popleft()
            used = sum(t for _, t in self._window)
            if len(self._window) < self.rpm and used + tokens <= self.tpm:
                self._window.append((now, tokens))
                return 0.0
            need_r = len(self._window) + 1 - self.rpm
            need_t = used + tokens - self.tpm
            freed_t = 0
            for freed_r, (at, t) in enumerate(self._window, start=1):
                freed_t += t
                if freed_r >= need_r and freed_t >= need_t:
                    return max(at + self.interval_s - now, 0.001)
            return self.interval_s

    def max_in_any_window(self) -> tuple[int, int]:
        """The most requests and the most tokens the server accepted in one window."""
        pts = sorted((c.at, c.tokens) for c in self.accepted)
        best_r = best_t = total = j = 0
        for i in range(len(pts)):
            total += pts[i][1]
            while pts[j][0] <= pts[i][0] - self.interval_s:
                total -= pts[j][1]
                j += 1
            best_r, best_t = max(best_r, i - j + 1), max(best_t, total)
        return best_r, best_t

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        msgs = body.get("messages") or []
        user = next((m.get("content", "") for m in msgs if m.get("role") == "user"), "")
        topic, text = write(user)
        prompt = sum(tokens_of(m.get("content", "")) for m in msgs)
        completion = tokens_of(text)
        now = time.time()
        wait = self.admit(now, prompt + completion)
        with self._lock:
            nth = sum(1 for c in self.calls if c.topic == topic and c.status == 200)
            call = Call(now, topic, prompt + completion, 429 if wait else 200)
            self.calls.append(call)
        if wait:
            err = {"error": {"message": "rate limit reached", "type": "rate_limit"}}
            return 429, {"Retry-After": str(math.ceil(wait))}, json.dumps(err).encode()
        pause = self.delay_s(topic, nth)
        if pause:
            time.sleep(pause)
        call.end = time.time()
        answer = {"id": "cmpl-1", "object": "chat.completion", "model": body.get("model", "m"),
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": text}}],
                  "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}}
        return 200, {}, json.dumps(answer).encode()

    def start(self) -> LimitedLlm:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                status, headers, data = server._answer(json.loads(self.rfile.read(n) or b"{}"))
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> LimitedLlm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
