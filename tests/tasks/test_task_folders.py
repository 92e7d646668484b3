"""A user's own task folder: found with or without ./, kept by path in a run, and a scorer that
fails costs one line or one instance, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stop.paths import tasks_dir

pytestmark = pytest.mark.docker


def _task(tmp_path: Path, name: str = "mytask", *, patch: tuple[str, str] | None = None) -> Path:
    d = tmp_path / name
    shutil.copytree(tasks_dir() / "str_grid_dist", d)
    if patch:
        scorer = d / "scorer.py"
        old, new = patch
        text = scorer.read_text()
        assert old in text
        scorer.write_text(text.replace(old, new))
    return d


def _stop(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STOP_RUNS_DIR=str(cwd / "runs"), LITELLM_LOCAL_MODEL_COST_MAP="True")
    return subprocess.run([sys.executable, "-m", "stop", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_task_folder_scores_with_or_without_dot_slash(tmp_path, docker_required):
    _task(tmp_path)
    for ref in ("mytask", "./mytask", str(tmp_path / "mytask")):
        p = _stop(tmp_path, "score", ref, "seed", "--json")
        assert p.returncode == 0, p.stderr
        assert abs(json.loads(p.stdout)["score"] - 0.4829) < 1e-4


def test_a_scorer_whose_generate_raises_is_one_line(tmp_path, docker_required):
    _task(tmp_path, "bad", patch=("def generate(rng, nprng):\n",
                                  "def generate(rng, nprng):\n    raise RuntimeError('bug in generate')\n"))
    p = _stop(tmp_path, "score", "./bad", "seed")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "generate() failed on instance 0" in lines[0]
    assert "bug in generate" in lines[0]


@pytest.mark.parametrize("body", ["raise RuntimeError('bug in score')", "return 'not a number'",
                                  "return float('nan')"])
def test_a_scorer_that_fails_costs_only_its_instances(tmp_path, docker_required, body):
    _task(tmp_path, "bad", patch=("def score(s, instance):\n",
                                  f"def score(s, instance):\n    {body}\n"))
    p = _stop(tmp_path, "score", "./bad", "seed", "--json")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    rep = json.loads(p.stdout)
    assert rep["score"] == 0.0
    assert {o["status"] for o in rep["instances"]} == {"error"}
    assert all(o["detail"].startswith("scorer failed:") for o in rep["instances"])


def test_a_run_on_a_task_folder_keeps_its_path(tmp_path, docker_required):
    _task(tmp_path)
    script = tmp_path / "model.json"
    script.write_text(json.dumps({"replies": [{"match": None, "texts": ["no code here"]}]}))
    p = _stop(tmp_path, "run", "./mytask", "--model", f"scripted:{script}", "--rounds", "0",
              "--quiet")
    assert p.returncode == 0, p.stderr
    run_dir = Path(p.stdout.strip().splitlines()[-1])
    assert run_dir.name.endswith("-mytask")
    assert json.loads((run_dir / "config.json").read_text())["task"] == str(tmp_path / "mytask")
