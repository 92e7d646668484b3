"""Transfer evaluation: bookkeeping (resume, identity of trials, the table) and a real transfer
through the Docker sandbox with the scripted model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from stop.core.config import RunConfig
from stop.experiments.transfer import (
    PUBLISHED,
    TransferError,
    execute_trials,
    format_table,
    load_table,
    plan_trials,
    run_transfer,
    summarize,
)
from stop.runs.store import RunStore
from stop.sandbox.records import source_hash
from stop.tasks.loader import load_task

FENCE = "`" * 3

# An exact solver for string grid distance: a DP over (last letter, distance so far) that
# reconstructs a string at exactly the target distance. It scores 1.0 on every instance.
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

BROKEN = "def algorithm(t, dist):\n    raise RuntimeError('no idea')\n"

# The "adopted" improver of the test run: one model call with a marker the script answers with
# the exact solver; it returns the reply's code without consulting the utility.
ROUND1 = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    replies = language_model.prompt("expert", "IMPROVER-ONE rewrite:\\n" + initial_solution)
    return extract_code(replies[0])
'''


def _make_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RunStore, object]:
    monkeypatch.setenv("STOP_RUNS_DIR", str(tmp_path / "runs"))
    script = tmp_path / "replies.json"
    script.write_text(json.dumps([
        {"match": "IMPROVER-ONE", "texts": [f"Here:\n{FENCE}python\n{EXACT_GRID}{FENCE}\n"]},
        {"match": None, "texts": [f"{FENCE}python\n{BROKEN}{FENCE}"]},
    ]))
    config = RunConfig.from_profile("tiny", model=f"scripted:{script}", rounds=1).to_dict()
    store = RunStore()
    run = store.create(config, label="transfer")
    run.write_improver(0, load_task("meta_optimization").seed_source)
    run.write_improver(1, ROUND1)
    return store, run


@pytest.mark.docker
def test_transfer_table_with_scripted_model(tmp_path, monkeypatch, sandbox) -> None:
    store, run = _make_run(tmp_path, monkeypatch)
    table = run_transfer(run, tasks=["str_grid_dist"], trials=2, sandbox=sandbox)
    row = table["rows"][0]
    # The seed solution `return t` scores 43.9% on the test split, the published figure.
    assert round(100 * row["seed"]["mean"], 1) == 43.9
    assert row["seed"]["lo"] == pytest.approx(row["seed"]["mean"])  # deterministic: zero width
    # The seed improver is offered only a broken rewrite, which its utility rejects: it keeps
    # the seed solution, so it scores exactly what the seed scores.
    assert row["seed_improver"]["scores"] == pytest.approx(row["seed"]["scores"])
    assert row["seed_improver"]["fallbacks"] == 0
    # The round-1 improver returns the exact solver.
    assert row["improver"]["scores"] == [1.0, 1.0]
    assert row["published"] == PUBLISHED["str_grid_dist"]
    assert table["improver_round"] == 1 and table["improver_label"] == "round 1 improver"
    assert load_table(run) == json.loads(json.dumps(table))

    trials = run.events("transfer_trial")
    assert len(trials) == 6
    assert {(e["arm"], e["trial"]) for e in trials} == {
        (a, k) for a in ("seed", "seed_improver", "improver") for k in range(2)}
    assert all(e["phase"] == "transfer" for e in trials)
    assert {e["solution_hash"] for e in trials if e["arm"] == "improver"} == {source_hash(EXACT_GRID.strip())}
    calls = run.events("model_call")
    assert calls and all(e["phase"] == "transfer" for e in calls)
    assert len({e["scope"] for e in calls}) == 4  # one scope per improver trial: fresh budgets
    assert len(run.events("improver_run")) == 4

    # Resume with more trials: only the third trial of each arm runs.
    table = run_transfer(run, tasks=["str_grid_dist"], trials=3, sandbox=sandbox, jobs=2)
    assert len(run.events("transfer_trial")) == 9
    assert table["rows"][0]["improver"]["n"] == 3

    # The command reads everything back and runs nothing new.
    result = CliRunner().invoke(_cli(), ["transfer", run.id, "--tasks", "str_grid_dist",
                                         "--trials", "3"])
    assert result.exit_code == 0, result.output
    assert len(run.events("transfer_trial")) == 9
    assert "9 of 9 trials already done, 0 to run" in result.output
    assert "43.9 ± 0.0" in result.output and "100.0 ± 0.0" in result.output
    assert "43.9 / 44.3 / 56.7" in result.output

    # An earlier round's improver is a different improver: its trials are new.
    table = run_transfer(run, tasks=["str_grid_dist"], trials=1, improver_round=0,
                         sandbox=sandbox)
    assert table["improver_label"] == "round 0 improver"
    assert table["rows"][0]["improver"]["scores"] == pytest.approx(row["seed"]["scores"][:1])


def _cli():
    from stop.cli import cli

    return cli


class FakeTask:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seed_source = f"# seed of {name}\n"


def test_execute_trials_resumes_and_marks_fallbacks(tmp_path) -> None:
    run = RunStore(tmp_path).create({"model": "m"})
    tasks = {"a": FakeTask("a")}
    specs = plan_trials(["a"], 3, "h0", "h1", "m")
    improved: list[tuple[str, int]] = []

    def improve(source: str, task: FakeTask, spec) -> dict:
        improved.append((spec.arm, spec.trial))
        if spec.arm == "seed_improver":
            return {"returned": task.seed_source, "fallback": True, "reason": "crashed"}
        return {"returned": "better", "fallback": False, "reason": ""}

    def score(task: FakeTask, source: str) -> float:
        return 0.9 if source == "better" else 0.25

    stop_after = {"n": 4}

    def interrupt(event: dict) -> None:
        stop_after["n"] -= 1
        if stop_after["n"] == 0:
            raise KeyboardInterrupt

    kwargs = dict(improve=improve, score=score, task_objects=tasks,
                  sources={"seed_improver": "I0", "improver": "I1"}, model="m",
                  improver_rounds={"seed": None, "seed_improver": 0, "improver": 1})
    with pytest.raises(KeyboardInterrupt):
        execute_trials(run, specs, on_trial=interrupt, **kwargs)
    assert len(run.events("transfer_trial")) == 4
    assert improved == [("seed_improver", 0)]  # the seed arm runs no improver
    execute_trials(run, specs, **kwargs)
    events = run.events("transfer_trial")
    assert len(events) == 9  # nothing finished was redone
    assert improved == [("seed_improver", 0), ("seed_improver", 1), ("seed_improver", 2),
                        ("improver", 0), ("improver", 1), ("improver", 2)]
    rows = summarize(events, ["a"], hashes={"seed_improver": "h0", "improver": "h1"})
    assert rows[0]["seed"]["scores"] == [0.25] * 3
    assert rows[0]["seed_improver"]["fallbacks"] == 3
    assert rows[0]["improver"]["mean"] == pytest.approx(0.9)
    # another model makes other trials
    other = plan_trials(["a"], 1, "h0", "h1", "other-model")
    execute_trials(run, other, **{**kwargs, "model": "other-model"})
    assert len(run.events("transfer_trial")) == 11  # the seed arm does not use a model
    rows = summarize(run.events("transfer_trial"), ["a"], model="m", max_trials=3)
    assert rows[0]["improver"]["n"] == 3


def test_summarize_interval_and_text_table() -> None:
    trials = [{"task": "maxcut", "arm": "improver", "trial": k, "status": "ok", "score": s,
               "improver_hash": "h"} for k, s in enumerate([0.5, 0.6, 0.7, 0.55, 0.65])]
    trials.append({"task": "maxcut", "arm": "seed", "trial": 0, "status": "ok", "score": 0.5})
    rows = summarize(trials, ["maxcut"])
    cell = rows[0]["improver"]
    # scipy 1.17.1: t.interval(0.95, 4, loc=0.6, scale=sem) = (0.50184, 0.69816)
    assert (cell["mean"], cell["lo"], cell["hi"]) == pytest.approx((0.6, 0.5018378, 0.6981622))
    assert math.isnan(rows[0]["seed"]["lo"])
    assert rows[0]["seed_improver"] is None
    text = format_table({"rows": rows, "trials": 5, "model": "m", "improver_label": "round 2"})
    assert "60.0 ± 9.8" in text and "50.0 (n=1)" in text and "not comparable" in text


def test_transfer_rejects_bad_requests(tmp_path, monkeypatch) -> None:
    _, run = _make_run(tmp_path, monkeypatch)
    with pytest.raises(TransferError, match="no improver for round 7"):
        run_transfer(run, tasks=["str_grid_dist"], trials=1, improver_round=7)
    with pytest.raises(TransferError, match="solve tasks"):
        run_transfer(run, tasks=["meta_optimization"], trials=1)
    with pytest.raises(TransferError, match="at least 1"):
        run_transfer(run, tasks=["str_grid_dist"], trials=0)
    result = CliRunner().invoke(_cli(), ["transfer", run.id, "--tasks", "no_such_task"])
    assert result.exit_code != 0
    assert "no_such_task" in str(result.exception)
    assert run.events("transfer_trial") == []
