"""Host-side grading of the harness's per-call results, and the CLI around tasks.

These drive `grade_calls` with the per-call records the harness sends back (the data that
crosses the boundary), so every outcome path is covered without a container; the real
sandbox path is in test_tasks_sandbox.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from stop.container.codec import Opaque

from stop.cli import cli
from stop.runs.recorders import NullRecorder
from stop.sandbox.jobs import SolveJob
from stop.sandbox.records import ExecResult
from stop.tasks.loader import TaskError, instances, load_task, load_task_dir
from stop.tasks.scoring import exec_limits, grade_calls, score_solution


def ok(value, elapsed=0.01):
    return {"status": "ok", "value": value, "error": "", "elapsed_s": elapsed}


def lpn_truth(task, split="val"):
    return [np.array(i.data["test_parity"]) for i in instances(task, split)]


def test_every_outcome_is_graded_per_instance():
    task = load_task("parity_noise")
    insts = instances(task, "val")
    truth = lpn_truth(task)
    calls = [ok(t) for t in truth]
    calls[0] = ok(truth[0].reshape(20, 1))                       # broadcasting trick
    calls[1] = ok(Opaque("AlwaysEqual"))                          # custom __eq__
    calls[2] = {"status": "error", "value": None, "error": "ValueError: x", "elapsed_s": 0.0}
    calls[3] = {"status": "timeout", "value": None, "error": "", "elapsed_s": 2.0}
    calls[4] = ok(truth[4].tolist(), elapsed=2.5)                 # over the limit, harness said ok
    calls[5] = ok([1 - v for v in truth[5].tolist()])             # valid but all wrong
    calls[6] = "not a dict"
    outcomes, rejected = grade_calls(task, insts, "ok", calls)
    status = [o.status for o in outcomes]
    assert status[:7] == ["invalid", "invalid", "error", "timeout", "timeout", "wrong", "error"]
    assert all(s == "ok" for s in status[7:])
    assert [o.score for o in outcomes[:7]] == [0.0] * 7
    assert all(o.score == 1.0 for o in outcomes[7:])
    assert outcomes[2].detail == "ValueError: x"
    assert [(i, e.rule) for i, e in rejected] == [(0, "wrong-shape"), (1, "wrong-type")]


def test_missing_results_after_a_dead_container():
    task = load_task("parity_noise")
    insts = instances(task, "val")
    truth = lpn_truth(task)
    outcomes, _ = grade_calls(task, insts, "timeout", [ok(t) for t in truth[:3]])
    assert [o.status for o in outcomes[:4]] == ["ok", "ok", "ok", "timeout"]
    outcomes, _ = grade_calls(task, insts, "crashed", [ok(truth[0])])
    assert outcomes[1].status == "error" and "crashed" in outcomes[1].detail
    # A tampered execution: even results that look right are not trusted.
    outcomes, _ = grade_calls(task, insts, "tampered", [ok(t) for t in truth])
    assert {o.status for o in outcomes} == {"error"} and sum(o.score for o in outcomes) == 0


class RecordedSandbox:
    """Plays back a fixed harness result; stands in for the container in this unit test."""

    name = "recorded"

    def __init__(self, status, value):
        self.result = ExecResult(status=status, value=value, backend="recorded")
        self.jobs = []

    def execute(self, job, *, limits, role, services=None, recorder=None):
        self.jobs.append((job, limits, role))
        return self.result

    def close(self):
        pass


def test_score_solution_builds_one_job_and_records_host_findings():
    task = load_task("parity_noise")
    truth = lpn_truth(task)
    calls = [ok(t) for t in truth]
    calls[3] = ok(np.tile(truth[3], (20, 1)))
    calls[7] = ok(np.tile(truth[7], (20, 1)))
    calls[9] = ok("01" * 10)
    sandbox = RecordedSandbox("ok", calls)
    rec = NullRecorder()
    report = score_solution(task, "def algorithm(a, b, c):\n    return c\n", split="val",
                            sandbox=sandbox, recorder=rec)
    job, limits, role = sandbox.jobs[0]
    assert role == "solution" and isinstance(job, SolveJob) and job.entry == "algorithm"
    assert len(job.calls) == 20 and job.per_call_s == 2.0
    assert limits.wall_s == 20 * (2.0 + 0.05) + 5.0 == exec_limits(task, 20).wall_s
    assert report.score == 17 / 20
    assert report.counts() == {"ok": 17, "wrong": 0, "timeout": 0, "error": 0, "invalid": 3}
    rules = {f.rule: f for f in report.findings}
    assert set(rules) == {"wrong-shape", "wrong-type"}
    shape = rules["wrong-shape"]
    assert (shape.layer, shape.role, shape.action, shape.severity) == ("host", "solution", "blocked", "medium")
    assert shape.detail["instances"] == [3, 7]
    assert [f.rule for f in rec.findings] == ["wrong-shape", "wrong-type"]
    assert rec.events[-1]["type"] == "task_score" and rec.events[-1]["score"] == 17 / 20
    d = report.to_dict()
    assert {"task", "split", "score", "instances", "findings", "counts", "machine"} <= set(d)
    assert d["machine"]["cpu_count"] and d["machine"]["platform"]
    json.dumps(d)


def make_meta_task(root):
    d = root / "meta_demo"
    d.mkdir()
    (d / "task.toml").write_text('kind = "meta"\n[settings]\nbase_task = "parity_noise"\n')
    (d / "seed_algorithm.py").write_text("def improve_algorithm(s, u, lm):\n    return s\n")
    (d / "utility.py").write_text("DESCRIPTION = 'Improve the improver.'\n")
    return d


def test_score_solution_refuses_meta_tasks(tmp_path):
    task = load_task_dir(make_meta_task(tmp_path))
    with pytest.raises(TaskError, match="meta task; score it with stop.core.meta.score_meta"):
        score_solution(task, task.seed_source, sandbox=RecordedSandbox("ok", []))


# ---------------------------------------------------------------- CLI


def test_stop_tasks_lists_and_shows():
    r = CliRunner().invoke(cli, ["tasks"])
    assert r.exit_code == 0, r.output
    for name in ("parity_noise", "str_grid_dist", "maxcut", "three_sat"):
        assert name in r.output
    r = CliRunner().invoke(cli, ["tasks", "show", "three_sat"])
    assert r.exit_code == 0
    assert "time limit: 0.1 s per call" in r.output and "def algorithm(formula)" in r.output
    assert "utility 25 calls, language model 4 calls x 6 responses" in r.output
    r = CliRunner().invoke(cli, ["tasks", "show", "maxcut", "--json"])
    d = json.loads(r.output)
    assert d["n_val"] == 100 and d["per_call_s"] == 0.1 and "max-cut" in d["description"]
    r = CliRunner().invoke(cli, ["tasks", "--json"])
    assert {t["name"] for t in json.loads(r.output)} >= {"parity_noise", "maxcut"}


def test_stop_score_bad_input_is_one_clear_error(tmp_path):
    r = CliRunner().invoke(cli, ["score", "nope", "seed"])
    assert isinstance(r.exception, TaskError) and "unknown task 'nope'" in str(r.exception)
    r = CliRunner().invoke(cli, ["score", "parity_noise", str(tmp_path / "missing.py")])
    assert "no solution file" in str(r.exception)
    bad = tmp_path / "bad.py"
    bad.write_text("def algorithm(:\n")
    r = CliRunner().invoke(cli, ["score", "parity_noise", str(bad)])
    assert "syntax error at line 1" in str(r.exception)
    r = CliRunner().invoke(cli, ["score", "parity_noise", "seed", "--split", "train"])
    assert r.exit_code == 2
