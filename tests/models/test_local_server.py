"""The batched engine on the real smoke model (SmolLM2), and the exact accept-or-resample rule.

No timings are asserted: the machine is shared, so speed is the benchmark's business.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer

import numpy as np
import pytest

from stop.models import local_install
from stop.models.cpu_share import CoreChooser
from stop.models.engine import Engine
from stop.models.local_server import make_handler
from stop.models.lookup import (
    Drafter,
    PromptIndex,
    SamplingParams,
    accept_or_resample,
    target_distribution,
)

MSGS = [{"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Rewrite this function:\ndef add(a, b):\n    return a + b\n"}]
OTHER = [{"role": "user", "content": "List three colours, one per line."}]


# ---------------------------------------------------------------- pure functions


def test_accept_or_resample_keeps_the_target_distribution():
    """Drafting a fixed token and accepting it with p(token), else resampling the renormalised
    rest, must give the target distribution itself, whichever token is drafted."""
    ids = np.array([5, 9, 2, 7])
    probs = np.array([0.5, 0.25, 0.15, 0.10])
    rng = np.random.default_rng(0)
    trials = 40_000
    for draft in (5, 7, 3):  # the most likely token, the least likely, one outside the support
        counts = dict.fromkeys(ids.tolist(), 0)
        accepted = 0
        for _ in range(trials):
            tok, ok = accept_or_resample(ids, probs, draft, rng)
            counts[tok] += 1
            accepted += ok
        freq = np.array([counts[i] for i in ids.tolist()]) / trials
        # 5 standard errors of a binomial proportion: fails by chance about once in 10^6 runs.
        assert np.all(np.abs(freq - probs) < 5 * np.sqrt(probs * (1 - probs) / trials)), (draft, freq)
        p_draft = dict(zip(ids.tolist(), probs.tolist(), strict=True)).get(draft, 0.0)
        assert abs(accepted / trials - p_draft) < 5 * np.sqrt(0.25 / trials)


def test_greedy_keeps_exactly_the_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    ids, probs = target_distribution(logits, SamplingParams(temperature=0.0))
    rng = np.random.default_rng(1)
    assert accept_or_resample(ids, probs, 1, rng) == (1, True)
    assert accept_or_resample(ids, probs, 2, rng) == (1, False)


def test_target_distribution_applies_top_k_top_p_and_min_p():
    logits = np.log(np.array([0.6, 0.3, 0.07, 0.02, 0.01], dtype=np.float32))
    ids, probs = target_distribution(logits, SamplingParams(temperature=1.0, top_k=4, top_p=0.95,
                                                            min_p=0.05))
    # top-k 4 drops 0.01; top-p 0.95 keeps 0.6+0.3+0.07; min-p 0.05*0.6 = 0.03 drops nothing more.
    assert ids.tolist() == [0, 1, 2]
    assert np.allclose(probs, np.array([0.6, 0.3, 0.07]) / 0.97, atol=1e-6)


def test_drafter_proposes_what_followed_the_latest_match():
    prompt = PromptIndex([1, 2, 3, 4, 5, 9, 1, 2])
    d = Drafter(prompt)
    assert d.draft(3) == [3, 4, 5]          # "1 2" was followed by 3 4 5 in the prompt
    for t in (3, 7, 8):
        d.append(t)
    d.append(1)
    d.append(2)
    assert d.draft(2) == [3, 7]             # the newer occurrence, in the generated text, wins
    assert Drafter(PromptIndex([1, 2, 3])).draft(2) == []


def test_core_chooser_honours_a_fixed_count():
    assert CoreChooser(fixed=1, cores=2).choose() == 1
    free = CoreChooser(cores=2, window_s=0.0)
    assert free.choose() in (1, 2)


# ---------------------------------------------------------------- the engine, on the smoke model


@pytest.fixture(scope="module")
def engine():
    if not local_install.verify_weights("smollm2")["ok"] or local_install.runtime_version() is None:
        if os.environ.get("STOP_ALLOW_SKIP") == "1":
            pytest.skip("smoke model not installed")
        pytest.fail("smoke model not installed: run `stop model install --smoke`")
    e = Engine(str(local_install.weights_path("smollm2")), n_ctx=4096, threads=1, max_prefixes=3)
    yield e
    e.close()


@pytest.mark.model
def test_greedy_replies_are_identical_with_lookup_on_and_off(engine):
    off = engine.chat(MSGS, n=1, max_tokens=48, temperature=0.0, lookup=False)
    on = engine.chat(MSGS, n=1, max_tokens=48, temperature=0.0, lookup=True)
    assert off["drafted"] == 0 and on["drafted"] > 0 and on["accepted"] > 0
    assert on["texts"] == off["texts"] and off["texts"][0].strip()
    # Accepted drafts save steps: fewer decode steps than tokens.
    assert on["steps"] < on["completion_tokens"]


@pytest.mark.model
def test_a_shared_prompt_is_evaluated_once_and_samples_decode_together(engine):
    first = engine.chat(OTHER, n=4, max_tokens=12, ignore_eos=True, seed=7, lookup=False)
    assert len(first["texts"]) == 4 and first["completion_tokens"] == 4 * 12
    assert first["steps"] == 11  # one step per token after the first, for all 4 together
    again = engine.chat(OTHER, n=2, max_tokens=5, ignore_eos=True)
    assert again["prompt_evaluated"] == 0 and again["completion_tokens"] == 10
    with pytest.raises(ValueError, match="does not fit"):
        engine.chat([{"role": "user", "content": "word " * 5000}], n=1, max_tokens=4)


@pytest.mark.model
def test_the_prefix_cache_serves_two_alternating_prompts(engine):
    a = engine.chat(MSGS, n=1, max_tokens=4)
    b = engine.chat(OTHER, n=1, max_tokens=4)
    a2 = engine.chat(MSGS, n=1, max_tokens=4)
    b2 = engine.chat(OTHER, n=1, max_tokens=4)
    assert a2["prompt_evaluated"] == 0 and b2["prompt_evaluated"] == 0
    assert a["prompt_tokens"] == a2["prompt_tokens"] and b["prompt_tokens"] == b2["prompt_tokens"]
    # A prompt that extends a cached one evaluates only its new part.
    longer = [MSGS[0], {"role": "user", "content": MSGS[1]["content"] + "Add type hints."}]
    c = engine.chat(longer, n=1, max_tokens=4)
    assert 0 < c["prompt_evaluated"] < c["prompt_tokens"] - 20
    assert len(engine.prefixes) <= engine.max_prefixes


@pytest.mark.model
def test_a_request_joins_a_running_batch_and_gets_a_complete_reply(engine):
    alone = engine.chat(OTHER, n=1, max_tokens=24, temperature=0.0, lookup=False)
    out: dict = {}
    long_ = threading.Thread(target=lambda: out.setdefault(
        "long", engine.chat(MSGS, n=3, max_tokens=160, ignore_eos=True, seed=3)))
    long_.start()
    deadline = time.monotonic() + 60
    while not any(r.samples for r in engine.running) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the long request decodes
    joined = engine.chat(OTHER, n=1, max_tokens=24, temperature=0.0, lookup=False)
    still_running = long_.is_alive()
    long_.join()
    assert still_running, "the joining request should finish while the long one decodes"
    assert out["long"]["completion_tokens"] == 3 * 160
    # Decoded in a shared batch, the greedy reply is the one it gets alone.
    assert joined["texts"] == alone["texts"] and joined["finish"] == alone["finish"]


@pytest.mark.model
def test_the_server_answers_n_samples_over_http(engine, tmp_path):
    stats = tmp_path / "stats.json"
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(engine, "smoke", stats))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = {"messages": OTHER, "n": 3, "max_tokens": 8, "temperature": 0.7, "seed": 1}
        req = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/v1/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            reply = json.loads(r.read())
    finally:
        server.shutdown()
        server.server_close()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] for c in reply["choices"])
    assert json.loads(stats.read_text())["n"] == 3
