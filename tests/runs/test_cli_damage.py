"""Broken files cost one line, never the listing of the other runs, never a traceback; and a
run is owned by one process at a time. On copies of a recorded two-round run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from privileges import drop_privileges

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "loop_run.json").read_text())
RUN_ID = FIXTURE["id"]


def stop(*args: str, root: Path, unprivileged: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "STOP_RUNS_DIR": str(root)}
    return subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=drop_privileges if unprivileged else None)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 1, out
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    for n in needles:
        assert n in out.stderr, out.stderr


def make_run(root: Path, name: str = RUN_ID) -> Path:
    for rel, text in FIXTURE["files"].items():
        path = root / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / name


def insert_line(run_dir: Path, line: bytes, at: int = 3) -> None:
    log = run_dir / "events.jsonl"
    lines = log.read_bytes().splitlines(True)
    log.write_bytes(b"".join(lines[:at] + [line] + lines[at:]))


DAMAGE = {  # suffix -> (how, the reason `stop runs` gives)
    "notobj": (lambda d: insert_line(d, b"[1, 2]\n"),
               "events.jsonl line 4 holds an event must be a JSON object, not list"),
    "utf8": (lambda d: insert_line(d, b'{"type": "round_start", "round": 1, "x": "\xff"}\n'),
             "events.jsonl line 4 is not valid UTF-8"),
    "fields": (lambda d: insert_line(d, b'{"seq": 3, "type": "round_end", "round": 1}\n'),
               "events.jsonl line 4 holds round_end event without 'adopted'"),
    "cfglist": (lambda d: (d / "config.json").write_text("[1, 2]\n"),
                "config.json is corrupt (a JSON list, not an object)"),
}


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root)
    for suffix, (damage, _) in DAMAGE.items():
        damage(make_run(root, f"{RUN_ID}-{suffix}"))
    (make_run(root, f"{RUN_ID}-nocfg") / "config.json").unlink()
    return root


def test_a_damaged_run_is_listed_with_its_reason_and_hides_no_other(runs):
    before = digest(runs)
    out = stop("runs", root=runs)
    assert out.returncode == 0, out.stderr
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
    assert "finished" in rows[RUN_ID] and "2/2" in rows[RUN_ID]
    assert "finished" in rows[f"{RUN_ID}-nocfg"] and "1.000" in rows[f"{RUN_ID}-nocfg"]
    warnings = out.stderr.splitlines()
    for suffix, (_, reason) in DAMAGE.items():
        assert "damaged" in rows[f"{RUN_ID}-{suffix}"]
        (line,) = [w for w in warnings if f"{RUN_ID}-{suffix}:" in w]
        assert line.startswith("warning: run ") and reason in line, line
    assert any("nocfg" in w and "rebuilt from the log" in w for w in warnings)
    data = {d["id"]: d for d in json.loads(stop("runs", "--json", root=runs).stdout)}
    assert data[RUN_ID]["status"] == "finished"
    assert {data[f"{RUN_ID}-{s}"]["status"] for s in DAMAGE} == {"damaged"}
    assert digest(runs) == before


@pytest.mark.parametrize("suffix", list(DAMAGE))
def test_every_command_on_a_damaged_run_is_one_line(runs, suffix):
    before = digest(runs)
    ref = f"{RUN_ID}-{suffix}"
    for args in (["show", ref], ["show", ref, "--json"], ["replay", ref],
                 ["run", "--resume", ref, "--rounds", "3", "--quiet"]):
        one_error(stop(*args, root=runs), DAMAGE[suffix][1])
    assert digest(runs) == before


def test_a_run_without_config_json_is_read_from_its_log(runs):
    ref = f"{RUN_ID}-nocfg"
    out = stop("show", ref, root=runs)
    assert out.returncode == 0 and "status finished" in out.stdout
    assert "config.json is missing; the config was rebuilt from the log" in out.stderr
    data = json.loads(stop("show", ref, "--json", root=runs).stdout)
    assert data["config"]["rounds"] == 2 and data["rounds_done"] == 2


def test_show_takes_the_run_folder_that_stop_run_prints(runs):
    for ref in (str(runs / RUN_ID), os.path.relpath(runs / RUN_ID)):
        out = stop("show", ref, root=runs)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"run {RUN_ID}")
    one_error(stop("show", str(runs / "nowhere"), root=runs), "is not a run folder")


def test_resume_of_a_finished_run_repairs_a_summary_left_running(runs):
    """Killed after its last event: summary.json still says running. Resume repairs it."""
    summary = runs / RUN_ID / "summary.json"
    data = json.loads(summary.read_text())
    data["status"] = "running"
    summary.write_text(json.dumps(data))
    out = stop("run", "--resume", RUN_ID, "--quiet", root=runs)
    assert out.returncode == 0, out.stderr
    assert "summary.json was out of date and is repaired" in out.stderr
    assert out.stdout.strip() == str(runs / RUN_ID)
    assert json.loads(summary.read_text())["status"] == "finished"
    again = stop("run", "--resume", RUN_ID, "--quiet", root=runs)
    one_error(again, "already finished its 2 rounds")  # nothing left to repair: refused


def test_a_resume_of_a_run_another_process_owns_is_refused(runs):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from stop.runs.store import Run\nwith Run(Path(sys.argv[1])).owned():\n"
         "    print('owned', flush=True); time.sleep(120)", str(runs / RUN_ID)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "owned"
        before = digest(runs)
        out = stop("run", "--resume", RUN_ID, "--rounds", "3", "--quiet", root=runs)
        one_error(out, f"run {RUN_ID} is in use by process {holder.pid}")
        assert digest(runs) == before
    finally:
        holder.kill()
        holder.wait()


def test_file_system_errors_are_one_line_and_write_nothing(tmp_path):
    a_file = tmp_path / "runs-file"
    a_file.write_text("")
    for args in (["runs"], ["show", "latest"], ["run", "--quiet", "--sandbox", "process"]):
        one_error(stop(*args, root=a_file), f"the runs folder {a_file} is not a folder")

    root = tmp_path / "runs"
    run_dir = make_run(root)
    before = digest(root)
    root.chmod(0o555)
    run_dir.chmod(0o555)
    try:
        out = stop("run", "--quiet", "--sandbox", "process", root=root, unprivileged=True)
        one_error(out, "cannot create a run folder under", "set STOP_RUNS_DIR")
        out = stop("run", "--resume", RUN_ID, "--rounds", "3", "--quiet", root=root,
                   unprivileged=True)
        one_error(out, f"run {RUN_ID}: cannot write to its folder")
        run_dir.chmod(0o755)
        (run_dir / "events.jsonl").chmod(0o444)
        out = stop("run", "--resume", RUN_ID, "--rounds", "3", "--quiet", root=root,
                   unprivileged=True)
        one_error(out, f"run {RUN_ID}: events.jsonl is read-only")
    finally:
        root.chmod(0o755)
        run_dir.chmod(0o755)
    assert digest(root) == before
    assert sorted(p.name for p in root.iterdir()) == [RUN_ID]
    shutil.rmtree(root)


def test_a_run_folder_that_cannot_be_read_hides_no_other(tmp_path):
    root = tmp_path / "runs"
    make_run(root)
    locked = make_run(root, f"{RUN_ID}-locked")
    locked.chmod(0)
    try:
        out = stop("runs", root=root, unprivileged=True)
    finally:
        locked.chmod(0o755)
    assert out.returncode == 0, out.stderr
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
    assert "finished" in rows[RUN_ID] and "damaged" in rows[f"{RUN_ID}-locked"]
    assert "Permission denied" in out.stderr and "Traceback" not in out.stderr
