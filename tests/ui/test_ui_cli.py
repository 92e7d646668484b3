"""`stop ui` refuses bad set-ups with one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def stop_ui(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stop", "ui", *args],
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_missing_runs_folder(tmp_path):
    line = _one_line_error(stop_ui(env={"STOP_RUNS_DIR": str(tmp_path / "nope")}))
    assert "does not exist" in line and "STOP_RUNS_DIR" in line


def test_runs_folder_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    line = _one_line_error(stop_ui(env={"STOP_RUNS_DIR": str(tmp_path / "file")}))
    assert "is not a folder" in line


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        line = _one_line_error(stop_ui("--port", str(port), env={
            "STOP_RUNS_DIR": str(tmp_path), "STOP_CACHE_DIR": str(tmp_path / "c")}))
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port 0" in line




def test_bad_port_is_a_usage_error(tmp_path):
    r = stop_ui("--port", "70000", env={"STOP_RUNS_DIR": str(tmp_path)})
    assert r.returncode == 2 and "Traceback" not in r.stderr
