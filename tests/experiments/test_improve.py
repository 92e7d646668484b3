"""The improve experiment end to end: the real loop, the real Docker sandbox, the scripted model.

Asked to improve an improver, the scripted model offers either a strictly better one (it returns
an exhaustive-search LPN solution, which scores 1.0) or the seed improver's own source; asked to
improve an LPN solution it offers a constant solution. The experiment must find the first
significantly above I_0 and the baseline, and find no difference for the second.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stop.core.config import RunConfig
from stop.experiments import improve as IX
from stop.experiments.improve_plan import format_plan, plan, plan_run
from stop.experiments.improve_summary import paired, summarize
from stop.experiments.tail import TailConfig, imports_of, run_tail
from stop.experiments.tail import summarize as tail_summary
from stop.experiments.transfer import run_transfer
from stop.models import ScriptedModel
from stop.models.base import ModelReply, ModelRequest
from stop.models.caps import SpendingCapReached
from stop.runs.store import RunStore
from stop.sandbox.records import source_hash
from stop.tasks.loader import load_task

FIX = Path(__file__).parents[1] / "fixtures" / "loop"
SEED = load_task("meta_optimization").seed_source


def fenced(code: str) -> str:
    return f"Here is the new program.\n```python\n{code}```\n"


def script(improver: str) -> list[dict]:
    return [{"match": "def improve_algorithm", "texts": [fenced(improver)]},
            {"match": None, "texts": [fenced((FIX / "lpn_zeros.py").read_text())]}]


def config(**kw) -> IX.ImproveConfig:
    return IX.ImproveConfig(**{"profile": "tiny", "runs": 2, "rounds": 1, "trials": 2,
                               "model": "scripted", **kw})


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("STOP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("STOP_CACHE_DIR", str(tmp_path / "cache"))
    return RunStore()


@pytest.mark.docker
def test_a_strictly_better_improver_beats_the_seed_and_the_baseline(store, sandbox) -> None:
    better = (FIX / "improver_better.py").read_text()
    model = ScriptedModel(script(better))
    said: list[str] = []

    def interrupt_at_the_second_arm(line: str) -> None:
        said.append(line)
        if ": baseline," in line and len([s for s in said if ": baseline," in s]) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        IX.run_improve(config(), store=store, model=model, sandbox=sandbox,
                       progress=interrupt_at_the_second_arm)
    exp = next(r for r in store.list() if r.id.endswith("-improve"))
    assert [e["arm"] for e in exp.events("improve_arm")] == ["I0"]
    first_trials = len(exp.events("improver_test"))
    assert first_trials == 2

    IX.run_improve(None, store=store, resume=exp.id, model=model, sandbox=sandbox)
    d = summarize(exp, store)
    assert d["status"] == "finished" and len(d["per_run"]) == 2
    # Nothing finished was redone: two runs x three arms x two trials, each logged once.
    tests = exp.events("improver_test")
    assert len(tests) == 12 and len({e["scope"] for e in tests}) == 12
    for r in d["per_run"]:
        assert r["adopted"] == 1
        assert r["arms"]["IT"]["improver_hash"] == source_hash(better.strip("\n"))
        assert r["arms"]["IT"]["scores"] == [1.0, 1.0]
        assert r["arms"]["I0"]["mean"] < 0.7 and r["arms"]["baseline"]["mean"] < 0.7
        assert r["arms"]["I0"]["improver_hash"] == source_hash(SEED)
    for name in ("IT-I0", "IT-baseline"):
        p = d["across"][name]
        assert p["n"] == 2 and p["mean"] > 0.3
        assert p["significant"] and p["p"] < 0.05
    assert d["improved"]["k"] == 2 and d["improved"]["n"] == 2
    # Model use per arm: the scripted I_T never asks the model; the baseline spends its budget.
    assert d["usage"]["IT"]["calls"] == 0
    assert d["usage"]["baseline"]["calls"] == 2 * 2 * 1
    assert d["usage"]["I0"]["calls"] == 2 * 2
    assert d["usage"]["self_improvement"]["calls"] > 0
    # The proposals of both runs: the better improver, which never calls the model.
    assert d["strategies"]["n"] == 2 and d["strategies"]["n_adopted"] == 2
    assert all(p["tags"] == ["other"] for p in d["proposals"])

    # A second resume finds everything done and asks the model nothing.
    asked = len(model.requests)
    IX.run_improve(None, store=store, resume=exp.id, model=model, sandbox=sandbox)
    assert len(model.requests) == asked and len(exp.events("improver_test")) == 12

    # The command reads it back (nothing left to do: no model, no sandbox): report, JSON, text.
    result = stop("experiment", "improve", "--resume", exp.id, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["across"]["IT-I0"]["significant"] is True
    assert Path(data["report"]).exists() and all(Path(p).exists()
                                                 for p in data["figures"].values())
    text = stop("experiment", "improve", "--resume", exp.id).stdout
    assert "IT-I0: mean +" in text and "(significant)" in text
    assert "paper (theirs)" in text and "3/25" in text
    assert len(model.requests) == asked


@pytest.mark.docker
def test_an_improver_identical_to_the_seed_shows_no_difference(store, sandbox, tmp_path) -> None:
    model = ScriptedModel(script(SEED))
    judge = tmp_path / "judge.json"  # a judge that answers with one family and some noise
    judge.write_text(json.dumps([{"match": None, "texts": ["beam_search, and rm -rf /"]}]))
    exp = IX.run_improve(config(judge=f"scripted:{judge}"), store=store, model=model,
                         sandbox=sandbox)
    d = summarize(exp, store)
    for r in d["per_run"]:
        assert r["adopted"] == 0
        assert r["arms"]["IT"]["same_as"] == "I0"  # the same improver: the same trials
    for name in ("IT-I0", "IT-baseline", "baseline-I0"):
        assert not d["across"][name]["significant"]
        assert d["across"][name]["mean"] == pytest.approx(0.0)
    assert d["improved"]["k"] == 0
    # Each run's proposal is the seed's own code (its fenced copy, without the final newline):
    # tagged as none of the families.
    assert d["strategies"]["n"] == 2 and d["strategies"]["n_adopted"] == 0
    assert all(p["tags"] == [] and p["parsed"] for p in d["proposals"])
    # The judge's labels sit beside the code's: only family names are kept from its reply.
    assert all(p["judge"] == ["beam_search"] for p in d["proposals"])
    rows = {r["key"]: r for r in d["strategies"]["rows"]}
    assert rows["beam_search"]["judge"]["k"] == 2 and rows["beam_search"]["all"]["k"] == 0
    assert d["usage"]["judge"]["calls"] == 1  # both runs proposed the same code: judged once


@pytest.mark.docker
def test_max_cost_stops_cleanly_and_a_resume_pays_nothing_twice(store, sandbox) -> None:
    class Priced(ScriptedModel):
        def complete(self, req: ModelRequest) -> ModelReply:
            reply = super().complete(req)
            reply.cost_usd = 0.01
            return reply

    model = Priced(script((FIX / "improver_better.py").read_text()))
    with pytest.raises(SpendingCapReached):
        IX.run_improve(config(runs=1, trials=1, max_cost=0.015), store=store, model=model,
                       sandbox=sandbox)
    assert len(model.requests) == 2  # the call that crossed the cap; the next is refused
    exp = next(r for r in store.list() if r.id.endswith("-improve"))
    assert exp.events("run_end")[-1]["status"] == "failed"
    IX.run_improve(None, store=store, resume=exp.id, given={"max_cost": 1.0}, model=model,
                   sandbox=sandbox)
    d = summarize(exp, store)
    assert d["status"] == "finished" and set(d["per_run"][0]["arms"]) == {"I0", "baseline", "IT"}
    fresh = d["usage"]["self_improvement"]["calls"] + sum(d["usage"][a]["calls"]
                                                          for a in ("I0", "baseline", "IT"))
    assert fresh == len(model.requests)  # every call paid once


def test_paired_test_against_reference_values() -> None:
    # scipy 1.17.1: ttest_1samp([0.1, 0.2, 0.15, 0.05], 0) -> t = 3.872983, p = 0.030466
    p = paired([0.1, 0.2, 0.15, 0.05])
    assert p["t"] == pytest.approx(3.872983, rel=1e-6) and p["p"] == pytest.approx(0.030466, rel=1e-4)
    assert p["significant"] and p["lo"] > 0
    same = paired([0.25, 0.25])
    assert same["p"] == 0.0 and same["significant"] and same["lo"] == same["hi"] == 0.25
    zero = paired([0.0, 0.0, 0.0])
    assert zero["p"] == 1.0 and not zero["significant"]
    one = paired([0.4])
    assert one["p"] is None and not one["significant"]


def test_the_baseline_asks_the_seed_improvers_question() -> None:
    def assigned(source: str) -> dict[str, str]:
        fn = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef))
        return {n.targets[0].id: ast.dump(n.value) for n in fn.body if isinstance(n, ast.Assign)
                and isinstance(n.targets[0], ast.Name)}

    seed, base = assigned(SEED), assigned(IX.baseline_source())
    assert base["message"] == seed["message"] and base["expertise"] == seed["expertise"]


def test_dry_run_counts_from_the_budgets(store) -> None:
    cfg = RunConfig.from_profile("tiny", rounds=1)
    phases = plan_run(cfg, trials=2)
    low, high = phases["rounds"]
    # Seed-like round: one self-improvement call of two proposals, then Û of the seed and of
    # both proposals (n_tests = 1 each) and the two re-evaluations: 5 base-task improver runs
    # of one call each (the README's "at most 6 model calls" of a tiny round), each with its
    # own container, 3 utility scorings and the val and test scoring of what it returned.
    assert (low.calls, high.calls) == (1 + 5, 1 + (3 + 2) * 1)
    assert low.containers == 1 + 5 * (1 + 3 + 2)
    i0, _ = phases["I0"]
    base, _ = phases["baseline"]
    assert (i0.calls, i0.responses, base.calls, base.responses) == (2, 4, 2, 4)
    p = plan(config(model="openai/gpt-4o-mini"))
    assert p["total"]["cost_at_most"] > 0 and p["runs"] == 2
    unknown = plan(config(model="openai/no-such-model-xyz"))
    assert unknown["total"]["cost_at_most"] is None
    assert "unknown" in format_plan(unknown) and "$0.0000" not in format_plan(unknown)
    assert "$0.0000" in format_plan(plan(config(model=None)))  # the embedded model is free


def test_bad_input_is_one_line(store) -> None:
    plain = store.create(RunConfig.from_profile("tiny").to_dict(), label="parity_noise")
    for args, words in ((["--from", "no-such-run", "--dry-run"], "no-such-run"),
                        (["no_such_task", "--dry-run"], "no_such_task"),
                        (["--trials", "0"], "--trials")):
        r = stop("experiment", "improve", *args)
        assert r.returncode in (1, 2) and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
    r = stop("experiment", "improve", "--resume", plain.id)
    assert r.returncode == 1 and "not an improve experiment" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def stop(*args: str) -> subprocess.CompletedProcess:
    """The console script itself, as a user runs it (its error handling included)."""
    return subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", *args],
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)


EXACT_GRID = '''def algorithm(t, dist):
    n = len(t)
    target = dist - sum(t[i] != t[i + 1] for i in range(n - 1))
    layers = [{(c, int(c != t[0])): None for c in "AB"}]
    for i in range(1, n):
        layer = {}
        for pc, v in layers[-1]:
            for c in "AB":
                layer.setdefault((c, v + (c != t[i]) + (c != pc)), (pc, v))
        layers.append(layer)
    for key in layers[-1]:
        if key[1] == target:
            out = []
            for i in range(n - 1, -1, -1):
                out.append(key[0])
                key = layers[i][key]
            return "".join(reversed(out))
    return t
'''


@pytest.mark.docker
def test_transfer_takes_an_improver_from_a_file(store, sandbox, tmp_path) -> None:
    run = store.create(RunConfig.from_profile("tiny", model="scripted").to_dict(), label="t")
    run.write_improver(0, SEED)
    elsewhere = tmp_path / "published_improver.py"
    elsewhere.write_text(f"SOLVER = {EXACT_GRID!r}\n\n\ndef improve_algorithm(initial_solution, "
                         f"utility, language_model):\n    return SOLVER\n")
    model = ScriptedModel([{"match": None, "texts": [fenced("def algorithm(t, dist):\n    return t\n")]}])
    table = run_transfer(run, tasks=["str_grid_dist"], trials=1, sandbox=sandbox, model=model,
                         improver_source=elsewhere.read_text(), improver_name=elsewhere.name)
    row = table["rows"][0]
    assert row["improver"]["scores"] == [1.0]
    assert table["improver_label"] == "improver from published_improver.py"
    assert table["improver_round"] is None
    assert table["improver_hash"] == source_hash(elsewhere.read_text())
    # A file that is not an improver is one line, before anything runs.
    for text, words in (("def algorithm(t, dist):\n    return t\n", "defines no improve_algorithm"),
                        ("def improve_algorithm(:\n", "not valid Python")):
        bad = tmp_path / "bad.py"
        bad.write_text(text)
        r = stop("transfer", run.id, "--tasks", "str_grid_dist", "--improver-file", str(bad))
        assert r.returncode == 1 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = stop("transfer", run.id, "--improver-file", str(tmp_path / "missing.py"))
    assert r.returncode == 1 and "cannot read the improver file" in r.stderr


def test_the_tail_names_only_modules_the_image_lacks() -> None:
    code = ("import os, numpy as np\nfrom scipy import linalg\nimport sklearn.svm\n"
            "import tensorflow as tf\nfrom keras import layers\nfrom . import local\n")
    assert imports_of(code) == ["keras", "tensorflow"]
    assert imports_of("def f(:\n") == []


@pytest.mark.docker
def test_tail_scores_every_sample_and_says_what_failed(store, sandbox) -> None:
    samples = [fenced(EXACT_GRID), "I would rather not write code.",
               fenced("import tensorflow\n\n\ndef algorithm(t, dist):\n    return t\n"),
               fenced("def algorithm(t, dist):\n    return t\n")]
    model = ScriptedModel([{"match": None, "texts": samples}])
    cfg = TailConfig(task="str_grid_dist", samples=4, batch=4, model="scripted")
    run = run_tail(cfg, store=store, model=model, sandbox=sandbox)
    d = tail_summary(run)
    assert d["samples"] == 4 and d["seed_val"] == pytest.approx(0.483, abs=5e-4)
    assert d["beats_seed"] == 1 and d["best"] == 1.0
    assert d["status"] == {"ok": 2, "no code": 1, "missing module": 1}
    assert d["imports"] == {"tensorflow": 1} and d["missing_modules"] == {"tensorflow": 1}
    assert sorted(d["scores"])[:2] == [0.0, 0.0]
    assert len(model.requests) == 1  # one call of four samples
    run_tail(cfg, store=store, resume=run.id, model=model, sandbox=sandbox)
    assert len(model.requests) == 1 and len(run.events("tail_sample")) == 5  # 4 and the seed


def test_a_run_created_before_a_kill_is_found_again(store) -> None:
    cfg = config(runs=2)
    exp = store.create(cfg.to_dict(), label="improve")
    named = store.create(cfg.run_config(0, exp.id).to_dict(), label="parity_noise")
    exp.recorder().record("improve_run", index=0, run_id=named.id)
    # Killed after creating run 1 and before naming it in the experiment's log:
    orphan = store.create(cfg.run_config(1, exp.id).to_dict(), label="parity_noise")
    store.create(config().run_config(1, "another-experiment").to_dict(), label="parity_noise")
    before = exp.log.size()
    members = IX.member_runs(exp, store)
    assert {k: r.id for k, r in members.items()} == {0: named.id, 1: orphan.id}
    assert exp.log.size() == before  # reading writes nothing
    assert members[1].config()["seed"] == 1  # run k has seed + k
