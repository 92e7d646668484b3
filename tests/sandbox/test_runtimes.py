"""Choosing the sandbox's OCI runtime, registering gVisor with the engine, and what the doctor
says about it: on files and on the real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stop.cli import checks
from stop.sandbox import runtimes
from stop.sandbox.execution import SandboxUnavailable

ROOT = Path(__file__).resolve().parents[2]


def test_runc_is_the_default_and_the_env_chooses(monkeypatch):
    monkeypatch.delenv(runtimes.ENV_VAR, raising=False)
    assert runtimes.choose() == "runc"
    monkeypatch.setenv(runtimes.ENV_VAR, "runsc")
    assert runtimes.choose() == "runsc"
    assert runtimes.choose("runc") == "runc"  # an explicit choice wins over the env


def test_an_unknown_runtime_is_one_clear_line(monkeypatch):
    monkeypatch.setenv(runtimes.ENV_VAR, "crun")
    with pytest.raises(SandboxUnavailable) as e:
        runtimes.choose()
    assert str(e.value) == ("unknown sandbox runtime 'crun' (from $STOP_SANDBOX_RUNTIME): "
                            "choose runc or runsc")
    with pytest.raises(SandboxUnavailable, match="^unknown sandbox runtime 'kata': choose"):
        runtimes.choose("kata")


def test_merge_keeps_every_other_setting_and_runtime():
    cfg = {"log-level": "warn", "runtimes": {"other": {"path": "/usr/bin/other"}},
           "default-runtime": "runc"}
    merged, changed = runtimes.merge_daemon_config(cfg, "/usr/bin/runsc")
    assert changed and merged["log-level"] == "warn" and merged["default-runtime"] == "runc"
    assert merged["runtimes"]["other"] == {"path": "/usr/bin/other"}
    assert merged["runtimes"]["runsc"] == {
        "path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none"]}
    assert cfg["runtimes"] == {"other": {"path": "/usr/bin/other"}}  # the input is not changed
    again, changed = runtimes.merge_daemon_config(merged, "/usr/bin/runsc")
    assert not changed and again == merged
    with pytest.raises(ValueError):
        runtimes.merge_daemon_config({"runtimes": ["runsc"]}, "/usr/bin/runsc")


def test_register_merges_into_the_file_and_never_clobbers_a_broken_one(tmp_path):
    path = tmp_path / "daemon.json"
    assert runtimes.register_runsc(path, "/usr/bin/runsc")  # no file yet: created
    assert json.loads(path.read_text())["runtimes"]["runsc"]["path"] == "/usr/bin/runsc"
    path.write_text(json.dumps({"data-root": "/x", "runtimes": {"a": {"path": "/a"}}}))
    path.chmod(0o600)
    assert runtimes.register_runsc(path, "/usr/bin/runsc")
    got = json.loads(path.read_text())
    assert got["data-root"] == "/x" and set(got["runtimes"]) == {"a", "runsc"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert not runtimes.register_runsc(path, "/usr/bin/runsc")  # already there
    path.write_text("{not json")
    with pytest.raises(SandboxUnavailable, match="not a valid engine configuration"):
        runtimes.register_runsc(path, "/usr/bin/runsc")
    assert path.read_text() == "{not json"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_register_command_line(tmp_path):
    path = tmp_path / "daemon.json"
    cmd = [sys.executable, "-m", "stop.sandbox.runsc_setup", "register", "--config", str(path)]
    check = subprocess.run([*cmd, "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and not path.exists()  # --check changes nothing
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"{path}: runsc registered"
    check = subprocess.run([*cmd, "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "already registered" in r.stdout
    path.write_text("[]")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not a JSON object" in r.stderr


def test_doctor_names_the_runtimes_and_the_fix(monkeypatch):
    monkeypatch.delenv(runtimes.ENV_VAR, raising=False)
    c = checks.check_runtimes(True, have=["runc", "runsc"])
    assert c.ok and c.detail == "engine has runc, runsc; stop uses runc"
    c = checks.check_runtimes(True, have=["runc"])
    assert c.ok and "runsc) not registered" in c.detail and runtimes.SETUP_GVISOR in c.detail
    monkeypatch.setenv(runtimes.ENV_VAR, "runsc")
    c = checks.check_runtimes(True, have=["runc"])
    assert not c.ok and c.required and "missing runsc" in c.detail
    assert c.fix == runtimes.SETUP_GVISOR
    monkeypatch.setenv(runtimes.ENV_VAR, "nope")
    assert not checks.check_runtimes(True, have=["runc", "runsc"]).ok


@pytest.mark.docker
def test_the_engine_refuses_a_runtime_it_lacks_in_one_line(docker_required):
    import docker

    api = docker.from_env(timeout=30).api
    assert "runc" in runtimes.engine_runtimes(api)
    runtimes.require(api, "runc")
    with pytest.raises(SandboxUnavailable) as e:
        runtimes.require(api, "no-such-runtime")
    assert "\n" not in str(e.value) and "has no no-such-runtime runtime" in str(e.value)


def _dockerd_pid() -> int | None:
    r = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True)
    pids = r.stdout.split()
    return int(pids[0]) if len(pids) == 1 else None


@pytest.mark.docker
def test_reloading_the_engine_keeps_running_containers(docker_required):
    """What the gvisor set-up step does after registering runsc: SIGHUP, not a restart."""
    import docker

    from stop.sandbox.image import ensure_image

    pid = _dockerd_pid()
    if pid is None or os.geteuid() != 0:
        pytest.skip("needs root and exactly one local dockerd")
    client = docker.from_env(timeout=60)
    c = client.containers.run(ensure_image(), ["sleep", "60"], detach=True, network_mode="none",
                              labels={"stop.test": "reload"})
    try:
        before = client.api.inspect_container(c.id)["State"]
        os.kill(pid, signal.SIGHUP)
        time.sleep(2)
        after = client.api.inspect_container(c.id)["State"]
        assert after["Running"] and after["Pid"] == before["Pid"]
        assert after["StartedAt"] == before["StartedAt"]
        assert client.ping() and _dockerd_pid() == pid
    finally:
        c.remove(force=True)


def test_setup_names_the_gvisor_step_for_the_tests_only():
    def dry(*args):
        r = subprocess.run(["bash", str(ROOT / "scripts/setup.sh"), *args, "--dry-run"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stderr

    assert "gVisor" in dry("--for", "test")
    assert "gVisor" not in dry("--for", "run")
    assert "gVisor" in dry("--only", "gvisor")
