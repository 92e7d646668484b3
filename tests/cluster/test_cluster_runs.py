"""Whole runs with `--executor ray` on a real local cluster, against the same scripted run done
locally: the same scores and decisions, two runs at once through a node's removal, a driver
killed with SIGKILL and resumed, and one clear line for each kind of bad cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cluster_helpers import (
    SETTINGS,
    containers,
    final_state,
    run_args,
    script,
    stop,
    stop_cmd,
    write_script,
)

from stop.core.config import RunConfig
from stop.core.loop import execute, new_run
from stop.models import ScriptedModel
from stop.paths import cache_dir
from stop.runs.store import RunStore
from stop.runs.summary import summarize
from stop.sandbox import open_sandbox

pytestmark = [pytest.mark.ray, pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The scripted run of tests/core/test_loop.py, on the local executor."""
    root = tmp_path_factory.mktemp("local-runs")
    cfg = RunConfig.from_profile("tiny", model="scripted", **SETTINGS)
    run = new_run(cfg, RunStore(root))
    sandbox = open_sandbox("docker")
    try:
        execute(run, cfg, model=ScriptedModel(script(), name="scripted:script.json"),
                sandbox=sandbox)
    finally:
        sandbox.close()
    return run


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "STOP_RUNS_DIR": str(tmp_path / "runs")}


def _no_duplicates(run) -> None:
    events = run.events()
    for key in (lambda e: (e["type"], e["scope"], e["solution_hash"], e["occurrence"])
                if e["type"] == "utility_call" else None,
                lambda e: (e["type"], e["scope"]) if e["type"] == "improver_test" else None,
                lambda e: (e["type"], e["key"]) if e["type"] == "model_call" else None,
                lambda e: (e["type"], e["round"], e["who"], e["split"])
                if e["type"] == "evaluation" else None,
                lambda e: (e["type"], e["round"]) if e["type"] in ("round_start", "round_end")
                else None):
        seen = Counter(k for e in events if (k := key(e)) is not None)
        assert seen and max(seen.values()) == 1, seen.most_common(2)
    assert len({e["seq"] for e in events}) == len(events)


def _kinds(run) -> Counter:
    return Counter(e["type"] for e in run.events() if e["type"] not in ("run_resume",))


def test_a_ray_run_reaches_the_same_scores_and_decisions_as_local(reference, cluster, tmp_path):
    env = _env(tmp_path)
    done = stop(*run_args(write_script(tmp_path), "--executor", "ray", "--ray-address",
                          cluster.address), env=env)
    assert done.returncode == 0, done.stderr
    run = RunStore(tmp_path / "runs").open("latest")
    assert done.stdout.strip() == str(run.dir)
    assert run.config()["executor"] == "ray"
    assert final_state(run) == final_state(reference)
    assert _kinds(run) == _kinds(reference)  # the same work: every execution, call, score
    _no_duplicates(run)
    assert containers(**{"stop.run": run.id}) == []


def _wait_for(pred, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def _count(root: Path, kind: str) -> int:
    n = 0
    for log in root.glob("*/events.jsonl"):
        n += sum(1 for line in log.read_text().splitlines()
                 if line.endswith("}") and json.loads(line)["type"] == kind)
    return n


def test_two_runs_at_once_survive_a_removed_node_with_their_own_budgets_and_logs(
        reference, cluster, tmp_path):
    env = _env(tmp_path)
    root = tmp_path / "runs"
    proc = subprocess.Popen(stop_cmd(*run_args(write_script(tmp_path), "--runs", "2",
                                               "--executor", "ray", "--ray-address",
                                               cluster.address)),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _count(root, "utility_call") >= 4, 600, proc)
        cluster.remove_worker(cluster.workers[0])
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.add_worker()
    assert proc.returncode == 0, err
    runs = [RunStore(root).open(line.rsplit("/", 1)[-1]) for line in out.split()]
    assert len(runs) == 2 and runs[0].id != runs[1].id
    assert sorted(r.config()["seed"] for r in runs) == [0, 1]
    for run in runs:
        assert final_state(run) == final_state(reference)  # model calls per round included
        assert _kinds(run) == _kinds(reference)
        _no_duplicates(run)
        assert {f["finding"]["run_id"] for f in run.events("audit_finding")} <= {run.id}
    keys = [{e["key"] for e in r.events("model_call")} for r in runs]
    assert keys[0].isdisjoint(keys[1])  # each run's calls are its own (the seed is in the key)


def _local_helpers() -> set[int]:
    out = set()
    for f in (cache_dir() / "ray-local").glob("*.json"):  # where the driver writes them
        out |= {e["pid"] for e in json.loads(f.read_text())["processes"]}
    return out


def test_a_driver_killed_with_sigkill_leaves_a_run_that_resume_finishes(reference, tmp_path):
    env = _env(tmp_path)
    root = tmp_path / "runs"
    before = _local_helpers()
    # The driver starts its own local Ray instance (no --ray-address), then dies at once.
    proc = subprocess.Popen(stop_cmd(*run_args(write_script(tmp_path), "--executor", "ray")),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # Killed once it has scored and has recorded its Ray helpers (slow on a loaded machine).
        _wait_for(lambda: _count(root, "improver_test") >= 2 and _local_helpers() - before,
                  600, proc)
        left = _local_helpers() - before
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run = RunStore(root).open("latest")
    assert summarize(run)["status"] == "killed"
    assert left, "the local instance recorded no processes"
    # Resumed on a new local instance, whose start ends what the killed one left behind.
    done = stop("run", "--resume", run.id, "--quiet", "--executor", "ray", env=env)
    assert done.returncode == 0, done.stderr
    assert final_state(run) == final_state(reference)
    _no_duplicates(run)
    assert [e["type"] for e in run.events()].count("run_resume") == 1
    _wait_for(lambda: containers(**{"stop.run": run.id}) == [], 30)
    alive = [p for p in left if Path(f"/proc/{p}").exists()
             and Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] != "Z"]
    assert alive == []


def _one_line(r: subprocess.CompletedProcess, words: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr + r.stdout, r.stderr[-2000:]
    assert lines and lines[-1].startswith("error: ") and words in lines[-1], lines[-5:]
    assert sum(1 for ln in lines if ln.startswith("error: ")) == 1


def test_an_unreachable_address_is_one_line(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = stop(*run_args(write_script(tmp_path), "--executor", "ray", "--ray-address",
                       f"127.0.0.1:{port}"), env=_env(tmp_path), timeout=120)
    _one_line(r, "cannot reach the Ray cluster")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_cluster_without_a_docker_node_is_one_line(cluster, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false",
                             "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                             "--object-store-memory=80000000"],
                            env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 120)
        time.sleep(3)
        r = stop(*run_args(write_script(tmp_path), "--executor", "ray", "--ray-address",
                           f"127.0.0.1:{port}"), env=_env(tmp_path), timeout=300)
        _one_line(r, "no node with a `docker` resource")
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def test_a_node_with_another_stop_and_a_driver_of_another_ray_are_one_line(cluster, tmp_path):
    # A node whose stop has a different sandbox/ (so it expects a different image).
    other = tmp_path / "other"
    for part in ("stop", "sandbox", "tasks"):
        shutil.copytree(ROOT / part, other / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", other / "pyproject.toml")
    with open(other / "sandbox" / "helpers.py", "a") as f:
        f.write("\n# another stop version\n")
    node = cluster.add_worker(env={"PYTHONPATH": str(other)})
    env = _env(tmp_path)
    # Ray puts the driver's folder first on its workers' path: the driver runs outside the
    # checkout, so the new node's workers import the other stop.
    try:
        r = stop(*run_args(write_script(tmp_path), "--executor", "ray", "--ray-address",
                           cluster.address), env=env, timeout=300, cwd=tmp_path)
        _one_line(r, "install the same stop version on every node")
        doc = stop("doctor", "--json", "--ray-address", cluster.address, env=env, timeout=300,
                   cwd=tmp_path)
        checks = json.loads(doc.stdout)["checks"]
        nodes = [c for c in checks if c["name"].startswith("node ")]
        assert doc.returncode == 1 and len(nodes) == 3
        assert sum(not c["ok"] and "sandbox" in c["detail"] for c in nodes) == 1
        assert sum(c["ok"] and "image present" in c["detail"] for c in nodes) == 2
    finally:
        cluster.remove_worker(node)
    # A driver of another Ray version (what Ray itself compares when a driver joins).
    code = ("import ray._private.utils as u\n"
            "u.compute_version_info = lambda: ('2.0.0', '3.11.7')\n"
            "from stop.cli import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code, *run_args(
        write_script(tmp_path), "--executor", "ray", "--ray-address", cluster.address)],
        env=env, capture_output=True, text=True, timeout=300)
    _one_line(r, "install the same versions on every node and here")
