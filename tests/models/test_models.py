"""The litellm backend against a real OpenAI-compatible HTTP server started here, through the gateway."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stop.models import LiteLLMModel, ModelError, ModelRequest, resolve_model
from stop.models.gateway import Gateway, LanguageModel
from stop.runs.store import NullRecorder


class FakeOpenAI:
    """A tiny OpenAI-compatible chat server: answers `n` choices, or fails as told."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.failures: list[int | str] = []  # status codes, or "slow" to stall past a timeout
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                fail = fake.failures.pop(0) if fake.failures else None
                if fail == "slow":
                    time.sleep(1.5)
                if isinstance(fail, int):
                    self._send(fail, {"error": {"message": f"injected {fail}", "type": "server_error"}})
                    return
                n = body.get("n") or 1
                user = body["messages"][-1]["content"]
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"{user}:{i}"}}
                                for i in range(n)],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n,
                              "total_tokens": 11 + 7 * n}})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
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


def test_litellm_through_gateway_sends_n_and_counts_tokens(fake, tmp_path):
    model = resolve_model("openai/fake-model", api_base=fake.url)
    assert isinstance(model, LiteLLMModel)
    rec = NullRecorder()
    gw = Gateway(model, recorder=rec, cache_dir=tmp_path)
    lm = LanguageModel(gw, scope="r0", max_tokens=64)
    assert lm.prompt("You are an expert.", "fix it", n_responses=3) == ["fix it:0", "fix it:1", "fix it:2"]
    body = fake.bodies[0]
    assert body["n"] == 3 and body["max_tokens"] == 64 and body["temperature"] == 0.7
    assert body["messages"][0] == {"role": "system", "content": "You are an expert."}
    call = rec.events[-1]
    assert (call["prompt_tokens"], call["completion_tokens"], call["cost_usd"]) == (11, 21, 0.0)
    assert gw.tokens_used == 32
    # The same request in the same scope position, from a fresh gateway: served from disk.
    lm2 = LanguageModel(Gateway(model, recorder=NullRecorder(), cache_dir=tmp_path), scope="r0",
                        max_tokens=64)
    assert lm2.prompt("You are an expert.", "fix it", n_responses=3) == ["fix it:0", "fix it:1", "fix it:2"]
    assert len(fake.bodies) == 1


def test_backend_without_n_is_asked_once_per_sample(fake):
    model = LiteLLMModel("openai/fake-model", api_base=fake.url, supports_n=False)
    reply = Gateway(model, recorder=NullRecorder(), use_cache=False).complete(
        ModelRequest(messages=[{"role": "user", "content": "q"}], n=2), scope="s")
    assert reply.texts == ["q:0", "q:0"] and len(fake.bodies) == 2
    assert all("n" not in b for b in fake.bodies)
    assert reply.prompt_tokens == 22


def test_retries_on_injected_5xx_and_429(fake):
    fake.failures = [503, 429, 500]
    rec = NullRecorder()
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=rec,
                 use_cache=False, backoff_s=0.01)
    reply = gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="s")
    assert reply.texts == ["q:0"]
    retries = [e for e in rec.events if e["type"] == "model_retry"]
    assert len(retries) == 3 and len(fake.bodies) == 4
    assert "rate limited" in retries[1]["error"] and "server error 500" in retries[2]["error"]


def test_gives_up_after_retries_and_bad_requests_are_not_retried(fake):
    fake.failures = [502] * 5
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=NullRecorder(),
                 use_cache=False, backoff_s=0.01, retries=2)
    with pytest.raises(ModelError, match="gave up after 3 attempts"):
        gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="s")
    assert len(fake.bodies) == 3
    fake.failures = [400]
    with pytest.raises(ModelError, match="BadRequest"):
        gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="s")
    assert len(fake.bodies) == 4


def test_timeout_is_retried(fake):
    fake.failures = ["slow"]
    model = LiteLLMModel("openai/fake-model", api_base=fake.url, timeout_s=0.5)
    rec = NullRecorder()
    gw = Gateway(model, recorder=rec, use_cache=False, backoff_s=0.01)
    assert gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="s").texts == ["q:0"]
    assert any("timed out" in e.get("error", "") for e in rec.events if e["type"] == "model_retry")


def test_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = Gateway(LiteLLMModel("openai/m", api_base=f"http://127.0.0.1:{port}/v1"),
                 recorder=NullRecorder(), use_cache=False, backoff_s=0.01, retries=1)
    with pytest.raises(ModelError, match=r"unreachable at http://127\.0\.0\.1.*gave up after 2"):
        gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="s")


@pytest.mark.parametrize("spec,key", [("openai/gpt-4o-mini", "OPENAI_API_KEY"),
                                      ("anthropic/claude-3-5-haiku-20241022", "ANTHROPIC_API_KEY")])
def test_missing_provider_key_names_it(monkeypatch, spec, key):
    monkeypatch.delenv(key, raising=False)
    gw = Gateway(resolve_model(spec), recorder=NullRecorder(), use_cache=False)
    with pytest.raises(ModelError, match=f"missing {key}"):
        gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="s")


def test_resolve_model_forms(tmp_path, monkeypatch):
    from stop.models.local import LocalModel

    monkeypatch.delenv("STOP_MODEL", raising=False)
    assert isinstance(resolve_model(None), LocalModel)
    assert resolve_model(None).which == "embedded"
    assert resolve_model("smollm2").which == "smollm2"
    monkeypatch.setenv("STOP_MODEL", "openai/gpt-4o")
    m = resolve_model(None)
    assert isinstance(m, LiteLLMModel) and m.name == "openai/gpt-4o"
    with pytest.raises(ModelError, match="not found"):
        resolve_model(f"scripted:{tmp_path / 'nope.json'}")
