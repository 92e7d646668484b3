"""Gateway and STOP facade: budgets, batching, cache, replay, caps, logging."""

from __future__ import annotations

import json
import threading

import pytest

from stop.models import Model, ModelError, ModelReply, ModelRequest, ReplayModel, ScriptedModel
from stop.models.base import ModelArgumentError, check_batch_args, total_cost
from stop.models.caps import PriceUnknown, SpendingCapReached, SpendingCaps
from stop.models.gateway import BudgetExceeded, Gateway, LanguageModel, request_key
from stop.runs.recorders import NullRecorder
from stop.runs.store import RunStore


def scripted(texts=("a", "b", "c")) -> ScriptedModel:
    return ScriptedModel([{"match": None, "texts": list(texts)}])


def test_prompt_returns_n_samples_in_one_request():
    model = scripted()
    rec = NullRecorder()
    lm = LanguageModel(Gateway(model, recorder=rec), scope="s")
    assert lm.prompt("You are an expert.", "improve this", n_responses=4) == ["a", "b", "c", "a"]
    assert len(model.requests) == 1
    req = model.requests[0]
    assert req.n == 4
    assert req.messages[0] == {"role": "system", "content": "You are an expert."}
    assert req.messages[1] == {"role": "user", "content": "improve this"}
    calls = [e for e in rec.events if e["type"] == "model_call"]
    assert len(calls) == 1 and calls[0]["texts"] == ["a", "b", "c", "a"]
    assert calls[0]["scope"] == "s" and len(calls[0]["key"]) == 64
    assert lm.calls_used == 1


def test_batch_prompt_distinct_messages_are_separate_requests_in_order():
    model = ScriptedModel([{"match": "one", "texts": ["1"]}, {"match": "two", "texts": ["2"]}])
    lm = LanguageModel(Gateway(model, recorder=NullRecorder()), scope="s")
    assert lm.batch_prompt("", ["one", "two", "one"]) == ["1", "2", "1"]
    assert [r.n for r in model.requests] == [2, 1]
    assert model.requests[0].messages == [{"role": "user", "content": "one"}]
    assert lm.calls_used == 1


def test_budget_counts_calls_not_samples_and_then_raises():
    lm = LanguageModel(Gateway(scripted(), recorder=NullRecorder()), scope="s", budget=2)
    lm.prompt("e", "m", n_responses=6)
    lm.batch_prompt("e", ["x", "y"])
    with pytest.raises(BudgetExceeded, match="2 of 2 calls"):
        lm.prompt("e", "m")
    assert lm.calls_used == 2


def test_batch_larger_than_max_responses_is_truncated_and_logged():
    rec = NullRecorder()
    lm = LanguageModel(Gateway(scripted(), recorder=rec), scope="s", max_responses_per_call=3)
    assert len(lm.prompt("e", "m", n_responses=10)) == 3
    cut = [e for e in rec.events if e["type"] == "model_batch_truncated"]
    assert cut == [{"type": "model_batch_truncated", "scope": "s", "call": 1, "requested": 10,
                    "allowed": 3}]


def test_bad_arguments_are_clear_errors():
    lm = LanguageModel(Gateway(scripted(), recorder=NullRecorder()), scope="s")
    with pytest.raises(ModelError, match="n_responses"):
        lm.prompt("e", "m", n_responses=0)
    with pytest.raises(ModelError, match="list of message strings"):
        lm.batch_prompt("e", [1, 2])
    with pytest.raises(ModelError, match="temperature"):
        lm.prompt("e", "m", temperature=9)
    assert lm.calls_used == 0


class CountingModel(Model):
    """A fresh answer per call, to tell served replies from new ones."""

    name = "counting"

    def __init__(self, tokens=(10, 5), cost: float | None = 0.0):
        self.calls = 0
        self.tokens = tokens
        self.cost = cost

    def complete(self, req: ModelRequest) -> ModelReply:
        self.calls += 1
        return ModelReply(texts=[f"r{self.calls}-{i}" for i in range(req.n)],
                          prompt_tokens=self.tokens[0], completion_tokens=self.tokens[1],
                          cost_usd=self.cost, model=self.name)

    def close(self) -> None:
        pass


def test_disk_cache_serves_a_repeated_request_for_free(tmp_path):
    req = ModelRequest(messages=[{"role": "user", "content": "hi"}], n=2)
    m1 = CountingModel(cost=0.5)
    first = Gateway(m1, recorder=NullRecorder(), cache_dir=tmp_path).complete(req, scope="a")
    # A second gateway (a resumed run) asks the same scope in the same order: served from disk.
    m2 = CountingModel()
    rec = NullRecorder()
    gw = Gateway(m2, recorder=rec, cache_dir=tmp_path, max_cost_usd=0.1)
    again = gw.complete(req, scope="a")
    assert again.texts == first.texts and again.cached and m2.calls == 0
    assert rec.events[-1]["cached"] is True and rec.events[-1]["cost_usd"] == 0.0
    assert gw.cost_usd == 0.0
    # The next call in the same scope is a new key: the model is asked.
    gw.complete(req, scope="a")
    assert m2.calls == 1
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 2 and all(len(f.stem) == 64 for f in files)


def test_scripted_model_is_not_cached_on_disk(tmp_path):
    lm = LanguageModel(Gateway(scripted(), recorder=NullRecorder(), cache_dir=tmp_path), scope="s")
    lm.prompt("e", "m")
    assert not list(tmp_path.rglob("*.json"))


def test_token_cap_and_cost_cap():
    gw = Gateway(CountingModel(tokens=(60, 40)), recorder=NullRecorder(), max_tokens_total=150,
                 use_cache=False)
    req = ModelRequest(messages=[{"role": "user", "content": "x"}])
    gw.complete(req, scope="s")
    gw.complete(req, scope="s")  # 100 used < 150: allowed, ends at 200
    with pytest.raises(SpendingCapReached, match="token cap reached: 200 of 150"):
        gw.complete(req, scope="s")
    gw = Gateway(CountingModel(cost=0.02), recorder=NullRecorder(), max_cost_usd=0.03,
                 use_cache=False)
    gw.complete(req, scope="s")
    gw.complete(req, scope="s")
    with pytest.raises(SpendingCapReached, match="cost cap"):
        gw.complete(req, scope="s")
    assert gw.cost_usd == pytest.approx(0.04)
    # A run's cap stops the run: it is no improver budget that an improver would be shown.
    assert not issubclass(SpendingCapReached, BudgetExceeded)


class FlakyModel(CountingModel):
    def __init__(self, errors):
        super().__init__()
        self.errors = list(errors)

    def complete(self, req):
        if self.errors:
            self.calls += 1
            raise self.errors.pop(0)
        return super().complete(req)


def test_retries_retryable_errors_then_gives_up():
    rec = NullRecorder()
    flaky = FlakyModel([ModelError("rate", retryable=True, status=429),
                        ModelError("5xx", retryable=True, status=503)])
    gw = Gateway(flaky, recorder=rec, backoff_s=0.001, use_cache=False)
    reply = gw.complete(ModelRequest(messages=[{"role": "user", "content": "x"}]), scope="s")
    assert reply.texts == ["r3-0"]
    assert [e["type"] for e in rec.events] == ["model_retry", "model_retry", "model_call"]
    always = FlakyModel([ModelError("down", retryable=True)] * 10)
    gw = Gateway(always, recorder=NullRecorder(), retries=2, backoff_s=0.001, use_cache=False)
    with pytest.raises(ModelError, match="gave up after 3 attempts"):
        gw.complete(ModelRequest(messages=[]), scope="s")
    fatal = FlakyModel([ModelError("bad key")])
    gw = Gateway(fatal, recorder=NullRecorder(), backoff_s=0.001, use_cache=False)
    with pytest.raises(ModelError, match="bad key"):
        gw.complete(ModelRequest(messages=[]), scope="s")
    assert fatal.calls == 1


def test_replay_serves_recorded_run_and_a_miss_names_key_and_scope(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"model": "counting"}, label="orig")
    model = CountingModel()
    lm = LanguageModel(Gateway(model, recorder=run.recorder(round=1), use_cache=False), scope="r1")
    original = lm.prompt("e", "improve", n_responses=3) + lm.prompt("e", "again")
    events = {e["key"]: e for e in run.events("model_call")}
    replay = ReplayModel(run.id, events)
    rec = NullRecorder()
    lm2 = LanguageModel(Gateway(replay, recorder=rec), scope="r1")
    assert lm2.prompt("e", "improve", n_responses=3) + lm2.prompt("e", "again") == original
    assert all(e["cached"] for e in rec.events)
    lm3 = LanguageModel(Gateway(replay, recorder=NullRecorder()), scope="r1")
    with pytest.raises(ModelError, match=r"no recorded reply for key [0-9a-f]{16} \(scope r1#0\)"):
        lm3.prompt("e", "something else")


def test_resolve_replay_reads_the_run(tmp_path, monkeypatch):
    from stop.models import resolve_model

    monkeypatch.setenv("STOP_RUNS_DIR", str(tmp_path))
    run = RunStore().create({}, label="x")
    gw = Gateway(CountingModel(), recorder=run.recorder(), use_cache=False)
    gw.complete(ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="z")
    replay = resolve_model(f"replay:{run.id[:8]}")
    assert isinstance(replay, ReplayModel) and replay.key_name == "counting"
    reply = Gateway(replay, recorder=NullRecorder()).complete(
        ModelRequest(messages=[{"role": "user", "content": "q"}]), scope="z")
    assert reply.texts == ["r1-0"] and reply.cached


def test_recorded_dict_makes_resume_free():
    req = ModelRequest(messages=[{"role": "user", "content": "q"}])
    key = request_key(req, "counting", "s", 0)
    model = CountingModel()
    gw = Gateway(model, recorder=NullRecorder(), use_cache=False,
                 recorded={key: {"texts": ["old"], "model": "counting"}})
    assert gw.complete(req, scope="s").texts == ["old"]
    assert gw.complete(req, scope="s").texts == ["r1-0"]
    assert model.calls == 1


def test_scripted_file_and_thread_safe_cursor(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"replies": [{"match": "alpha", "texts": ["A1", "A2"]},
                                            {"match": None, "texts": ["Z"]}]}))
    from stop.models import resolve_model

    model = resolve_model(f"scripted:{path}")
    assert isinstance(model, ScriptedModel)
    gw = Gateway(model, recorder=NullRecorder())
    got: list[str] = []
    lock = threading.Lock()

    def work():
        lm = LanguageModel(gw, scope=f"t{threading.get_ident()}", budget=10)
        for _ in range(5):
            texts = lm.prompt("", "the alpha task")
            with lock:
                got.extend(texts)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == ["A1"] * 10 + ["A2"] * 10
    assert LanguageModel(gw, scope="o").prompt("", "other") == ["Z"]
    assert len(model.requests) == 21
    assert model.requests[-1].messages == [{"role": "user", "content": "other"}]


def test_scripted_file_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ModelError, match="not JSON"):
        ScriptedModel.from_file(bad)
    with pytest.raises(ModelError, match="not found"):
        ScriptedModel.from_file(tmp_path / "missing.json")
    with pytest.raises(ModelError, match="texts"):
        ScriptedModel([{"match": None}])


class PrivateModel(CountingModel):
    """Neither scripted nor replayed, yet its replies must not be cached: it says so itself."""

    name = "private"
    cacheable = False


class RecordedOnly(CountingModel):
    """Brings its own recorded replies and answers nothing else (as a replay does)."""

    name = "tape"
    recorded_only = True

    def __init__(self, recorded):
        super().__init__()
        self.recorded = recorded


def test_the_gateway_asks_the_model_what_it_is_not_its_class(tmp_path):
    req = ModelRequest(messages=[{"role": "user", "content": "q"}])
    Gateway(PrivateModel(), recorder=NullRecorder(), cache_dir=tmp_path).complete(req, scope="s")
    assert not list(tmp_path.rglob("*.json"))
    key = request_key(req, "tape", "s", 0)
    tape = RecordedOnly({key: {"texts": ["taped"], "model": "tape"}})
    gw = Gateway(tape, recorder=NullRecorder(), cache_dir=tmp_path)
    assert gw.complete(req, scope="s").texts == ["taped"]
    with pytest.raises(ModelError, match=r"tape has no recorded reply for key [0-9a-f]{16} \(scope s#1\)"):
        gw.complete(req, scope="s")
    assert tape.calls == 0


def test_caps_are_per_run_across_gateways_and_resumes():
    req = ModelRequest(messages=[{"role": "user", "content": "x"}])
    caps = SpendingCaps(max_tokens_total=250, run_id="RUN1")
    for _ in range(2):  # two rounds, one gateway each, one ledger
        Gateway(CountingModel(tokens=(60, 40)), recorder=NullRecorder(), caps=caps,
                use_cache=False).complete(req, scope="s")
    gw = Gateway(CountingModel(tokens=(60, 40)), recorder=NullRecorder(), caps=caps,
                 use_cache=False)
    gw.complete(req, scope="s")
    with pytest.raises(SpendingCapReached) as info:
        gw.complete(req, scope="s")
    assert str(info.value) == ("token cap reached: 300 of 250 tokens used in this run; resume with "
                               "a higher cap: `stop run --resume RUN1 --max-tokens-total 550`")
    # A resumed run starts from its log: fresh calls and the cost of short replies count,
    # served ones do not.
    events = [{"type": "model_call", "prompt_tokens": 60, "completion_tokens": 40, "cost_usd": 0.25},
              {"type": "model_call", "prompt_tokens": 60, "completion_tokens": 40, "cost_usd": 0.0,
               "cached": True},
              {"type": "model_retry", "prompt_tokens": 5, "completion_tokens": 0, "cost_usd": 0.5},
              {"type": "model_retry", "error": "rate limited"}]
    caps = SpendingCaps.of_run(events, run_id="RUN2", max_tokens_total=None, max_cost_usd=0.7)
    assert (caps.tokens_used, caps.cost_usd) == (105, 0.75)
    with pytest.raises(SpendingCapReached, match=r"\$0\.7500 of \$0\.7000 spent in this run; "
                       r"resume with a higher cap: `stop run --resume RUN2 --max-cost 1\.45`"):
        Gateway(CountingModel(), recorder=NullRecorder(), caps=caps).complete(req, scope="s")


def test_a_cost_cap_on_an_unknown_price_is_refused_before_any_call():
    class Unpriced(CountingModel):
        name = "mystery"

        def price_known(self) -> bool:
            return False

    model = Unpriced(cost=None)
    with pytest.raises(PriceUnknown, match="the price of model mystery is unknown"):
        Gateway(model, recorder=NullRecorder(), max_cost_usd=1.0)
    assert model.calls == 0
    # Without a cost cap it runs, and its cost is reported unknown, not $0.
    rec = NullRecorder()
    gw = Gateway(model, recorder=rec, use_cache=False, max_tokens_total=10_000)
    gw.complete(ModelRequest(messages=[{"role": "user", "content": "x"}]), scope="s")
    assert rec.events[-1]["cost_usd"] is None and gw.cost_usd is None
    assert total_cost(rec.events) is None
    assert total_cost([{"cost_usd": 0.25}, {"cost_usd": 0.5}, {}]) == 0.75
    # A price that turns out unknown mid-run stops a cost-capped run instead of counting $0.
    priced_but_not = CountingModel(cost=None)
    gw = Gateway(priced_but_not, recorder=NullRecorder(), use_cache=False, max_cost_usd=1.0)
    gw.complete(ModelRequest(messages=[{"role": "user", "content": "x"}]), scope="s")
    with pytest.raises(PriceUnknown, match="cost cap cannot be enforced"):
        gw.complete(ModelRequest(messages=[{"role": "user", "content": "x"}]), scope="s")


@pytest.mark.parametrize("args", [(1, ["m"], 0.5), ("e", "m", 0.5), ("e", [1], 0.5),
                                  ("e", ["m"], float("nan")), ("e", ["m"], True),
                                  ("e", ["m"], 10 ** 400), ("e", ["m"], "hot")])
def test_one_check_of_batch_prompt_arguments(args):
    with pytest.raises(ModelArgumentError):
        check_batch_args(*args)
    assert issubclass(ModelArgumentError, ModelError)
    check_batch_args("e", ("m", "n"), 2)
