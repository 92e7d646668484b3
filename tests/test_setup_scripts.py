"""The set-up script, run for real: argument handling, the skip path, the non-root answer when
no engine answers, and starting a Docker engine (a private dockerd on its own socket and data
root, so the engine other work uses is never touched)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup.sh"


def setup_sh(*args: str, env: dict[str, str] | None = None, user: int | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = ["bash", str(SETUP), *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_unknown_argument_is_a_usage_error():
    r = setup_sh("--frobnicate")
    assert r.returncode == 2
    assert "unknown argument: --frobnicate" in r.stderr
    r = setup_sh("--for", "everything")
    assert r.returncode == 2
    assert "--for takes run or test" in r.stderr


def test_dry_run_names_every_step_for_the_tests():
    r = setup_sh("--for", "test", "--dry-run")
    assert r.returncode == 0, r.stderr
    for expected in ("system packages", "python environment", "Docker engine",
                     "stop sandbox build", "stop model install --smoke", "set-up finished"):
        assert expected in r.stderr
    # The test set-up never fetches the 1.1 GB model.
    assert "model install\n" not in r.stderr.replace("install --smoke", "")


def test_installed_venv_is_skipped_quickly():
    """After one install, the package step only checks a stamp (pyproject.toml unchanged)."""
    first = setup_sh("--only", "venv", timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    start = time.monotonic()
    second = setup_sh("--only", "venv")
    took = time.monotonic() - start
    assert second.returncode == 0, second.stderr[-2000:]
    assert "up to date" in second.stderr
    assert "pip install" not in second.stderr
    assert took < 15, f"skip path took {took:.1f}s"


def test_without_root_and_engine_it_says_what_to_run():
    # Run as nobody when we are root; pytest's tmp_path is not reachable for nobody.
    cache = Path(tempfile.mkdtemp(prefix="stop-setup-"))
    cache.chmod(0o777)
    env = {"DOCKER_HOST": f"unix://{cache}/no-engine.sock", "STOP_CACHE_DIR": str(cache)}
    try:
        r = setup_sh("--only", "docker", env=env, user=65534 if os.geteuid() == 0 else None)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert r.returncode == 1
    assert "Docker engine not reachable" in r.stderr
    assert "systemctl start docker" in r.stderr
    assert "usermod -aG docker" in r.stderr


@pytest.mark.docker
def test_root_starts_a_docker_engine_when_none_answers(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("starting dockerd needs root; the non-root path is tested above")
    assert shutil.which("dockerd"), "dockerd missing: the set-up installs docker.io"
    sock, pidfile = tmp_path / "d.sock", tmp_path / "d.pid"
    flags = (f"-H unix://{sock} --data-root {tmp_path}/data --exec-root {tmp_path}/exec "
             f"--pidfile {pidfile} --bridge=none --iptables=false")
    env = {"DOCKER_HOST": f"unix://{sock}", "STOP_CACHE_DIR": str(tmp_path / "cache"),
           "STOP_DOCKERD_ARGS": flags}
    try:
        r = setup_sh("--only", "docker", env=env, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "starting dockerd" in r.stderr and "answers after" in r.stderr
        assert (tmp_path / "cache" / "logs" / "dockerd.log").exists()
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
                              capture_output=True, text=True, timeout=30)
        assert info.returncode == 0 and info.stdout.strip()
        again = setup_sh("--only", "docker", env=env)
        assert again.returncode == 0
        assert "reachable" in again.stderr and "starting dockerd" not in again.stderr
    finally:
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)


def test_ci_entry_point_runs_the_readme_test_command():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == "make test"
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0
    assert "scripts/test.sh" in dry.stdout
