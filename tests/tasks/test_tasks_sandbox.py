"""Scoring through the real sandbox: published seed scores, the LPN ceiling, and per-instance
failures (wrong shape, wrong type, exception, timeout) counted without sinking the task."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stop.cli import cli
from stop.runs.recorders import NullRecorder
from stop.tasks.loader import load_task
from stop.tasks.scoring import score_solution

LPN_EXHAUSTIVE = """
import itertools
import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    masks = np.array(list(itertools.product([0, 1], repeat=train_samples.shape[1])))
    errors = ((train_samples @ masks.T) % 2 != train_parity[:, None]).sum(axis=0)
    best = masks[int(np.argmin(errors))]
    return (test_samples @ best) % 2
"""

# Misbehaves on the first calls (the harness calls in instance order), then solves.
LPN_MIXED = LPN_EXHAUSTIVE.replace("def algorithm", "def solve") + """

class Sneaky(list):
    pass


class AlwaysEqual:
    def __eq__(self, other):
        return True


calls = [0]


def algorithm(train_samples, train_parity, test_samples):
    i = calls[0]
    calls[0] += 1
    good = solve(train_samples, train_parity, test_samples)
    if i == 0:
        return good.reshape(20, 1)
    if i == 1:
        return "".join(str(v) for v in good)
    if i == 2:
        raise ValueError("no idea")
    if i == 3:
        while True:
            pass
    if i == 4:
        return Sneaky(good.tolist())
    if i == 5:
        return [AlwaysEqual()] * 20
    if i == 6:
        return {"predictions": good.tolist()}
    if i == 7:
        return good[:19]
    if i == 8:
        return 1 - good
    return good
"""


@pytest.mark.docker
def test_cli_str_grid_dist_seed_matches_the_published_test_score(sandbox):
    # The fixture checks the engine; the command opens its own Docker sandbox.
    r = CliRunner().invoke(cli, ["score", "str_grid_dist", "seed", "--split", "test", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert round(d["score"], 3) == 0.439
    assert (d["task"], d["split"], len(d["instances"]), d["findings"]) == ("str_grid_dist", "test", 50, [])
    assert d["counts"]["timeout"] == d["counts"]["error"] == d["counts"]["invalid"] == 0
    assert d["machine"]["cpu_count"] >= 1 and d["backend"] == "docker"


@pytest.mark.docker
def test_str_grid_dist_seed_val(sandbox):
    task = load_task("str_grid_dist")
    report = score_solution(task, task.seed_source, split="val", sandbox=sandbox)
    assert round(report.score, 3) == 0.483
    assert report.exec_status == "ok"


@pytest.mark.docker
@pytest.mark.parametrize("split", ["val", "test"])
def test_lpn_exhaustive_search_scores_one(sandbox, split):
    task = load_task("parity_noise")
    report = score_solution(task, LPN_EXHAUSTIVE, split=split, sandbox=sandbox)
    assert report.score == 1.0
    assert report.counts()["ok"] == task.n_instances(split)


@pytest.mark.docker
def test_lpn_seed_scores_about_half(sandbox):
    task = load_task("parity_noise")
    report = score_solution(task, task.seed_source, split="test", sandbox=sandbox)
    assert 0.4 < report.score < 0.6
    assert report.counts()["ok"] + report.counts()["wrong"] == 50


@pytest.mark.docker
def test_failures_score_zero_for_their_instance_only(sandbox):
    task = load_task("parity_noise")
    rec = NullRecorder()
    report = score_solution(task, LPN_MIXED, split="val", sandbox=sandbox, recorder=rec)
    status = [o.status for o in report.outcomes]
    assert status[:9] == ["invalid", "invalid", "error", "timeout", "invalid", "invalid",
                          "invalid", "invalid", "wrong"]
    assert status[9:] == ["ok"] * 11
    assert report.counts() == {"ok": 11, "wrong": 1, "timeout": 1, "error": 1, "invalid": 6}
    assert report.score == pytest.approx(11 / 20)
    assert "ValueError: no idea" in report.outcomes[2].detail
    host = {f.rule: f for f in report.findings if f.layer == "host"}
    assert sorted(host["wrong-shape"].detail["instances"]) == [0, 7]
    assert sorted(host["wrong-type"].detail["instances"]) == [1, 4, 5, 6]
    assert all((f.role, f.action) == ("solution", "blocked") for f in host.values())
    recorded = {f.rule for f in rec.findings}
    assert {"wrong-shape", "wrong-type", "resource-timeout"} <= recorded
    types = [e["type"] for e in rec.events]
    assert "sandbox_exec" in types and types[-1] == "task_score"


@pytest.mark.docker
def test_a_solution_that_fails_to_load_scores_zero_everywhere(sandbox):
    task = load_task("three_sat")
    report = score_solution(task, "raise RuntimeError('broken')\n", split="val", sandbox=sandbox)
    assert report.score == 0.0 and report.counts()["error"] == 30
    assert "broken" in report.outcomes[0].detail


@pytest.mark.docker
def test_every_seed_runs_in_the_sandbox(sandbox):
    # three_sat and maxcut seeds are bound by the 0.1 s limit: their scores follow the load.
    expected = {"parity_noiseless": (0.3, 0.7), "modified_quadratic_assignment": (0.05, 0.4),
                "three_sat": (0.1, 1.0), "maxcut": (0.0, 0.6)}
    for name, (lo, hi) in expected.items():
        task = load_task(name)
        report = score_solution(task, task.seed_source, split="val", sandbox=sandbox)
        assert lo <= report.score < hi, (name, report.score)
        counts = report.counts()
        assert counts["error"] == counts["invalid"] == 0, (name, counts)
        assert report.exec_status == "ok"


def test_process_backend_scores_the_same(process_sandbox):
    task = load_task("str_grid_dist")
    report = score_solution(task, task.seed_source, split="test", sandbox=process_sandbox)
    assert round(report.score, 3) == 0.439 and report.backend == "process"


@pytest.mark.docker
def test_stop_score_dispatches_meta_tasks_to_the_meta_utility(sandbox, tmp_path):
    # The scripted model always proposes the exhaustive LPN solver, so the seed improver,
    # run n_tests times in the sandbox, returns a perfect solution every time.
    script = tmp_path / "replies.json"
    script.write_text(json.dumps({"replies": [
        {"match": None, "texts": ["```python\n" + LPN_EXHAUSTIVE + "```"]}]}))
    r = CliRunner().invoke(cli, ["score", "meta_optimization", "seed", "--json",
                                 "--model", f"scripted:{script}"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["task"], d["split"], d["score"]) == ("meta_optimization", "val", 1.0)
    assert len(d["instances"]) == load_task("meta_optimization").settings["n_tests"]
