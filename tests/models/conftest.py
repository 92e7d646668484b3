"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the model tests (called through litellm)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class FakeOpenAI:
    """A tiny OpenAI-compatible chat server: answers `n` choices, or misbehaves as told.

    Each entry of `failures` spoils one request: a status code; (status, Retry-After value);
    "slow" (stall past a timeout); "empty" (200 with no choices); "short" (200 with one choice
    fewer than asked); "html" (200 with a body that is not JSON).
    """

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.failures: list[int | str | tuple[int, str]] = []
        self.times: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                fake.times.append(time.monotonic())
                fail = fake.failures.pop(0) if fake.failures else None
                if fail == "slow":
                    time.sleep(1.5)
                if isinstance(fail, tuple):
                    code, wait = fail
                    self._send(code, {"error": {"message": f"injected {code}", "type": "x"}},
                               headers={"Retry-After": wait})
                    return
                if isinstance(fail, int):
                    self._send(fail, {"error": {"message": f"injected {fail}", "type": "server_error"}})
                    return
                if fail == "html":
                    self._send(200, b"<html><title>\x1b]0;owned\x07Gateway</title></html>",
                               headers={"Content-Type": "text/html"})
                    return
                n = body.get("n") or 1
                n = 0 if fail == "empty" else n - 1 if fail == "short" else n
                user = body["messages"][-1]["content"]
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"{user}:{i}"}}
                                for i in range(n)],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n,
                              "total_tokens": 11 + 7 * n}})

            def _send(self, code, payload, headers=None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
                try:
                    self.send_response(code)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeOpenAI()
    yield f
    f.close()
