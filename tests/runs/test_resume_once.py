"""Resume logs nothing twice: a run cut short at the worst moments (right after an improver
run, between the two splits of an evaluation, inside a transfer trial) resumes to the same
result with each once-only event in its history once. A kill -9 is simulated exactly by
cutting the append-only log after the event where it lands (every other file is written
atomically and again on resume). Scripted model, process sandbox: fast and deterministic."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from stop.core.config import RunConfig
from stop.core.loop import execute, new_run
from stop.experiments.transfer import run_transfer
from stop.models import ScriptedModel
from stop.runs.events import identity
from stop.runs.store import Run, RunStore
from stop.runs.summary import summarize
from stop.sandbox import open_sandbox
from stop.tasks.loader import load_task

FIX = Path(__file__).parents[1] / "fixtures" / "loop"
SETTINGS = {"rounds": 1, "n_tests": 1, "lm_budget": 1, "max_responses_per_call": 2,
            "utility_budget": 3, "meta_lm_budget": 1, "meta_max_responses_per_call": 2,
            "meta_utility_budget": 3, "improver_wall_s": 20, "self_improve_wall_s": 120,
            "jobs": 2, "sandbox": "process"}


def fenced(name: str) -> str:
    return f"Here.\n```python\n{(FIX / name).read_text()}```\n"


SCRIPT = [{"match": "def improve_algorithm",
           "texts": [fenced("improver_better.py"), fenced("improver_worse.py")]},
          {"match": None, "texts": [fenced("lpn_two_bits.py"), fenced("lpn_zeros.py")]}]


def model() -> ScriptedModel:
    return ScriptedModel(SCRIPT, name="scripted:resume")


@pytest.fixture(scope="module")
def sandbox():
    sb = open_sandbox("process")
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sandbox) -> tuple[Run, RunConfig]:
    cfg = RunConfig.from_profile("tiny", model="scripted", **SETTINGS)
    run = new_run(cfg, RunStore(tmp_path_factory.mktemp("runs")))
    execute(run, cfg, model=model(), sandbox=sandbox)
    return run, cfg


def cut_after(run: Run, dest: Path, pick) -> Run:
    """A copy of `run` as a kill right after the first event `pick` accepts would leave it."""
    shutil.copytree(run.dir, dest)
    lines = (dest / "events.jsonl").read_bytes().splitlines(True)
    at = next(i for i, raw in enumerate(lines) if pick(json.loads(raw)))
    (dest / "events.jsonl").write_bytes(b"".join(lines[: at + 1]))
    return Run(dest)


def decisions(run: Run) -> list[dict]:
    return [{k: r[k] for k in ("round", "adopted", "reason", "candidate_hash", "kept_hash",
                                "incumbent", "candidate")} for r in summarize(run)["round_table"]]


def repeated(run: Run) -> dict:
    counts = Counter(key for e in run.events() if (key := identity(e)) is not None)
    return {k: n for k, n in counts.items() if n > 1}


KILLS = {
    "after the self-improvement's improver run":
        lambda e: e["type"] == "improver_run" and e["scope"].endswith("/self/lm"),
    "after an improver run inside the meta-utility, before its improver_test":
        lambda e: e["type"] == "improver_run" and "/self/u" in e["scope"],
    "between the val and the test split of an evaluation":
        lambda e: e["type"] == "evaluation" and e["split"] == "val",
}


@pytest.mark.parametrize("moment", list(KILLS))
def test_a_resumed_run_logs_each_result_once(finished, sandbox, tmp_path, moment):
    run, cfg = finished
    assert repeated(run) == {}
    cut = cut_after(run, tmp_path / run.id, KILLS[moment])
    execute(cut, cfg, model=model(), sandbox=sandbox)
    assert decisions(cut) == decisions(run)
    assert repeated(cut) == {}
    types = Counter(e["type"] for e in cut.events())
    assert types["improver_run"] == Counter(e["type"] for e in run.events())["improver_run"]
    assert types["evaluation"] == 4 and types["run_resume"] == 1


ROUND1 = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    replies = language_model.prompt("expert", "IMPROVER-ONE rewrite:\\n" + initial_solution)
    return extract_code(replies[0])
'''
TRANSFER_SCRIPT = [{"match": "IMPROVER-ONE", "texts": ["```python\ndef algorithm(t, dist):\n"
                                                      "    return t\n```\n"]},
                   {"match": None, "texts": ["no code"]}]


def test_a_resumed_transfer_does_not_log_served_calls_again(tmp_path, sandbox):
    run = RunStore(tmp_path / "runs").create(
        RunConfig.from_profile("tiny", model="scripted", rounds=1, sandbox="process").to_dict())
    run.write_improver(0, load_task("meta_optimization").seed_source)
    run.write_improver(1, ROUND1)
    kwargs = dict(tasks=["str_grid_dist"], trials=1, sandbox=sandbox)
    run_transfer(run, model=ScriptedModel(TRANSFER_SCRIPT, name="scripted:t"), **kwargs)
    assert repeated(run) == {} and len(run.events("transfer_trial")) == 3
    cut = cut_after(run, tmp_path / "cut", lambda e: e["type"] == "model_call")
    run_transfer(cut, model=ScriptedModel(TRANSFER_SCRIPT, name="scripted:t"), **kwargs)
    assert len(cut.events("transfer_trial")) == 3
    assert repeated(cut) == {}
    assert len(cut.events("model_call")) == len(run.events("model_call"))


def test_two_processes_appending_to_one_log_never_repeat_a_seq(tmp_path):
    run = RunStore(tmp_path).create({})
    writer = ("import sys\nfrom pathlib import Path\nfrom stop.runs.store import Run\n"
              "rec = Run(Path(sys.argv[1])).recorder(phase=sys.argv[2])\n"
              "for i in range(200):\n    rec.record('round_start', round=i)\n")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(run.dir), name])
             for name in ("a", "b", "c")]
    for p in procs:
        assert p.wait(timeout=120) == 0
    seqs = [e["seq"] for e in run.events()]
    assert seqs == list(range(600))
