"""The litellm backend against a real OpenAI-compatible HTTP server started here, through the gateway."""

from __future__ import annotations

import time

import pytest

from stop.models import LiteLLMModel, ModelError, ModelRequest, resolve_model
from stop.models.gateway import Gateway, LanguageModel
from stop.runs.recorders import NullRecorder


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
    # litellm has no price for "fake-model": its cost is unknown, not $0.
    assert (call["prompt_tokens"], call["completion_tokens"], call["cost_usd"]) == (11, 21, None)
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


def ask(gw, n=1, content="q"):
    return gw.complete(ModelRequest(messages=[{"role": "user", "content": content}], n=n), scope="s")


@pytest.mark.parametrize("spoil", ["empty", "short"])
def test_a_reply_with_fewer_texts_than_asked_is_retried_then_reported_never_cached(
        fake, tmp_path, spoil):
    fake.failures = [spoil] * 3
    rec = NullRecorder()
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=rec,
                 cache_dir=tmp_path, backoff_s=0.01, retries=2)
    got = "0 of 2" if spoil == "empty" else "1 of 2"
    with pytest.raises(ModelError, match=f"returned {got} replies.*gave up after 3 attempts"):
        ask(gw, n=2)
    assert len(fake.bodies) == 3
    assert [e["type"] for e in rec.events] == ["model_retry", "model_retry", "model_error"]
    assert not list(tmp_path.rglob("*.json"))  # nothing cached
    # Once the server answers in full, the same call succeeds and only then is cached.
    fake.failures = [spoil]
    assert ask(gw, n=2).texts == ["q:0", "q:1"]
    assert len(list(tmp_path.rglob("*.json"))) == 1
    assert [e["texts"] for e in rec.events if e["type"] == "model_call"] == [["q:0", "q:1"]]


def test_a_short_entry_in_the_cache_or_the_log_is_not_served(fake, tmp_path):
    """An empty reply cached (or logged) before this was fixed must not be served again."""
    from stop.models.gateway import ResponseCache, request_key

    model = LiteLLMModel("openai/fake-model", api_base=fake.url)
    req = ModelRequest(messages=[{"role": "user", "content": "q"}], n=2)
    key = request_key(req, "openai/fake-model", "s", 0)
    ResponseCache(tmp_path).put(key, {"texts": [], "model": model.name})
    gw = Gateway(model, recorder=NullRecorder(), cache_dir=tmp_path,
                 recorded={key: {"key": key, "texts": ["only one"]}})
    reply = gw.complete(req, scope="s")
    assert reply.texts == ["q:0", "q:1"] and not reply.cached and len(fake.bodies) == 1


def test_a_200_reply_that_is_not_json_is_one_clear_line(fake):
    fake.failures = ["html"]
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=NullRecorder(),
                 use_cache=False, backoff_s=0.01)
    with pytest.raises(ModelError) as info:
        ask(gw)
    msg = str(info.value)
    assert msg == (f"model openai/fake-model at {fake.url}: the server answered with a body that "
                   f"is not JSON (is --api-base the model server's /v1 address?)")
    assert len(fake.bodies) == 1  # not retried: a wrong address stays wrong


def test_library_class_names_are_cut_from_server_errors(fake):
    fake.failures = [400]
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=NullRecorder(),
                 use_cache=False)
    with pytest.raises(ModelError) as info:
        ask(gw)
    assert str(info.value) == "model openai/fake-model: BadRequestError: injected 400"


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(fake, code):
    fake.failures = [(code, "1")]
    rec = NullRecorder()
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=rec,
                 use_cache=False, backoff_s=0.001)
    assert ask(gw).texts == ["q:0"]
    retry = [e for e in rec.events if e["type"] == "model_retry"]
    assert len(retry) == 1 and retry[0]["delay_s"] >= 1.0
    assert fake.times[1] - fake.times[0] >= 1.0


def test_retry_after_an_http_date_and_past_the_bound(fake):
    from email.utils import formatdate

    fake.failures = [(429, formatdate(time.time() + 2, usegmt=True))]
    rec = NullRecorder()
    gw = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=rec,
                 use_cache=False, backoff_s=0.001, max_retry_after_s=5)
    assert ask(gw).texts == ["q:0"]
    assert 0.5 <= [e for e in rec.events if e["type"] == "model_retry"][0]["delay_s"] <= 2.5
    # A wait longer than the bound is not slept on: the call ends at once, saying why.
    fake.failures = [(429, "3600")]
    started = time.monotonic()
    with pytest.raises(ModelError, match="asks to wait 3600 s, longer than the 5 s this waits"):
        ask(gw)
    assert time.monotonic() - started < 1.0 and len(fake.bodies) == 3


def test_the_model_timeout_is_a_setting_and_an_env_var(fake, monkeypatch):
    monkeypatch.delenv("STOP_MODEL_TIMEOUT_S", raising=False)
    assert LiteLLMModel("openai/m").timeout_s == 600.0
    assert resolve_model("openai/m", timeout_s=42).timeout_s == 42.0
    assert resolve_model("smollm2", timeout_s=7).timeout_s == 7.0
    assert resolve_model("smollm2").timeout_s == 3600.0
    monkeypatch.setenv("STOP_MODEL_TIMEOUT_S", "0.4")
    model = resolve_model("openai/fake-model", api_base=fake.url)
    assert model.timeout_s == 0.4 and resolve_model("smollm2").timeout_s == 0.4
    assert resolve_model("openai/m", timeout_s=9).timeout_s == 9.0  # the run's setting wins
    fake.failures = ["slow"]
    rec = NullRecorder()
    assert ask(Gateway(model, recorder=rec, use_cache=False, backoff_s=0.01)).texts == ["q:0"]
    assert "timed out" in [e for e in rec.events if e["type"] == "model_retry"][0]["error"]
    for bad in ("soon", "0", "-3", "nan", "inf"):
        monkeypatch.setenv("STOP_MODEL_TIMEOUT_S", bad)
        with pytest.raises(ModelError, match="STOP_MODEL_TIMEOUT_S must be a positive number"):
            LiteLLMModel("openai/m")


def test_a_known_price_is_counted_and_an_unknown_one_is_not_zero(fake):
    rec = NullRecorder()
    priced = Gateway(LiteLLMModel("openai/gpt-4o-mini", api_base=fake.url), recorder=rec,
                     use_cache=False)
    ask(priced)
    # gpt-4o-mini: $0.15 per million prompt tokens, $0.60 per million completion tokens.
    assert rec.events[-1]["cost_usd"] == pytest.approx(11 * 0.15e-6 + 7 * 0.6e-6)
    unknown = Gateway(LiteLLMModel("openai/fake-model", api_base=fake.url), recorder=rec,
                      use_cache=False)
    ask(unknown)
    assert rec.events[-1]["cost_usd"] is None and unknown.cost_usd is None
    assert resolve_model("embedded", api_base=fake.url).price_known()  # our own server: free
