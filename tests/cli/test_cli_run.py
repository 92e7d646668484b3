"""`stop runs`, `stop show`, `stop diff`, and bad inputs to `stop run` and `stop replay`, on a copy
of a recorded two-round run (round 1 adopted a better improver, round 2 kept it)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

# The run's files in one JSON document (its improver sources are data, kept byte for byte).
FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "loop_run.json").read_text())
RUN_ID = FIXTURE["id"]


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    for rel, text in FIXTURE["files"].items():
        path = root / RUN_ID / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setenv("STOP_RUNS_DIR", str(root))
    return root


def stop(*args: str, root: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "STOP_RUNS_DIR": str(root)}
    return subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_runs_lists_the_run_as_a_table_and_as_json(runs):
    out = stop("runs", root=runs)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:3] == ["id", "task", "model"]
    assert row.startswith(RUN_ID) and "2/2" in row and "finished" in row
    assert "1.000" in row  # the best meta-utility, val and test
    data = json.loads(stop("runs", "--json", root=runs).stdout)
    assert [d["id"] for d in data] == [RUN_ID]
    assert data[0]["best"] == {"val": 1.0, "test": 1.0, "round": 1}
    assert data[0]["status"] == "finished" and data[0]["rounds_done"] == 2


def test_show_prints_the_round_table_and_decisions(runs):
    out = stop("show", "latest", root=runs)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"run {RUN_ID}") and "status finished" in lines[0]
    r1 = next(ln for ln in lines if ln.startswith("1 "))
    r2 = next(ln for ln in lines if ln.startswith("2 "))
    assert "yes" in r1 and "beats incumbent" in r1
    assert " no " in r2 and "unchanged" in r2
    data = json.loads(stop("show", RUN_ID[:10], "--json", root=runs).stdout)
    assert [r["adopted"] for r in data["round_table"]] == [True, False]
    assert data["config"]["rounds"] == 2
    one = json.loads(stop("show", RUN_ID, "--round", "1", "--json", root=runs).stdout)
    assert one["candidate"]["val"] == 1.0 and one["adopted"] is True
    text = stop("show", RUN_ID, "--round", "1", root=runs).stdout
    assert "adopted the candidate" in text


def test_show_code_and_diff_between_rounds(runs):
    run_dir = runs / RUN_ID
    seed = stop("show", "latest", "--round", "0", "--code", root=runs)
    assert seed.stdout == (run_dir / "improvers" / "round_000.py").read_text()
    one = stop("show", "latest", "--round", "1", "--code", root=runs)
    assert one.stdout == (run_dir / "improvers" / "round_001.py").read_text()
    assert "EXHAUSTIVE" in one.stdout
    diff = stop("diff", "latest", "0", "1", root=runs)
    assert diff.returncode == 0
    assert diff.stdout.startswith(f"--- {RUN_ID}/round_000.py\n+++ {RUN_ID}/round_001.py")
    assert "+EXHAUSTIVE = '''" in diff.stdout and "-from helpers import extract_code" in diff.stdout
    same = json.loads(stop("diff", "latest", "1", "2", "--json", root=runs).stdout)
    assert same["same"] is True and same["diff"] == ""


@pytest.mark.parametrize("args, message", [
    (["show", "nothing-like-this"], "no run matches 'nothing-like-this'"),
    (["show", RUN_ID, "--round", "7"], "has no finished round 7"),
    (["show", RUN_ID, "--round", "9", "--code"], "has no improver for round 9"),
    (["diff", RUN_ID, "0", "5"], "has no improver for round 5"),
    (["run", "no_such_task", "--quiet"], "unknown task 'no_such_task'"),
    (["run", "--set", "n_tests=0", "--quiet"], "n_tests must be an integer >= 1"),
    (["run", "--set", "colour=blue", "--quiet"], "expected KEY=VALUE with KEY one of"),
    (["run", "--resume", RUN_ID, "--quiet"], "already finished its 2 rounds"),
    (["run", "--resume", RUN_ID, "--model", "x", "--quiet"], "drop --model"),
    (["run", "--resume", "zzz", "--quiet"], "no run matches 'zzz'"),
    (["replay", "zzz"], "no run matches 'zzz'"),
])
def test_bad_inputs_give_one_line_and_lose_nothing(runs, args, message):
    before = digest(runs)
    out = stop(*args, root=runs)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stderr.startswith("error: ") and message in out.stderr
    assert digest(runs) == before


def test_corrupt_config_is_one_clear_error(runs):
    (runs / RUN_ID / "config.json").write_text('{"task": "parity_noise", ')
    before = digest(runs)
    out = stop("show", RUN_ID, root=runs)
    assert out.returncode == 1 and out.stderr.startswith(f"error: run {RUN_ID}: config.json is corrupt")
    resumed = stop("run", "--resume", RUN_ID, "--quiet", root=runs)
    assert resumed.returncode == 1 and "config.json is corrupt" in resumed.stderr
    listed = stop("runs", root=runs)  # the listing goes on and says which run it skipped
    assert listed.returncode == 0 and "config.json is corrupt" in listed.stderr
    assert digest(runs) == before


def test_config_with_bad_values_is_refused(runs):
    cfg = json.loads((runs / RUN_ID / "config.json").read_text())
    cfg["n_tests"] = -3
    (runs / RUN_ID / "config.json").write_text(json.dumps(cfg))
    out = stop("run", "--resume", RUN_ID, "--rounds", "3", "--quiet", root=runs)
    assert out.returncode == 1 and "n_tests must be an integer >= 1" in out.stderr


def test_torn_last_line_is_one_clear_error_and_nothing_is_lost(runs):
    log = runs / RUN_ID / "events.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"seq": 999, "type": "model_ca')
    before = digest(runs)
    for args in (["show", RUN_ID], ["show", RUN_ID, "--json"], ["diff", RUN_ID, "0", "1"],
                 ["replay", RUN_ID]):
        out = stop(*args, root=runs)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "torn line" in out.stderr
        assert f"stop run --resume {RUN_ID}" in out.stderr
    listed = stop("runs", root=runs)  # the listing still reads every complete event
    assert listed.returncode == 0 and RUN_ID in listed.stdout
    assert digest(runs) == before


def test_run_help_states_what_the_profiles_change():
    out = subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", "run",
                          "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for line in ("n_tests", "meta_utility_budget", "max_tokens"):
        assert line in out.stdout
    lines = out.stdout.splitlines()
    header = next(ln for ln in lines if ln.strip().startswith("setting")).split()
    cells = next(ln for ln in lines if ln.strip().startswith("n_tests")).split()
    row = dict(zip(header, cells[: len(header)], strict=True))  # then the setting's help
    assert (row["tiny"], row["paper"]) == ("1", "5")
