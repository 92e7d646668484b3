"""`stop doctor` against the real machine: each missing part is reported with the command that
fixes it, and a ready machine passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stop.cli import checks as doctor

ROOT = Path(__file__).resolve().parents[2]


def run_doctor(env: dict[str, str], cwd: Path = ROOT, pythonpath: Path | None = None):
    full = dict(os.environ)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    if pythonpath is not None:
        full["PYTHONPATH"] = str(pythonpath)
    r = subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", "doctor",
                        "--json"], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
    assert r.stdout, r.stderr
    report = json.loads(r.stdout)
    return r.returncode, report, {c["name"]: c for c in report["checks"]}


@pytest.mark.docker
def test_fresh_checkout_reports_image_and_model_missing_with_fixes(tmp_path):
    """A copy of the project whose sandbox/ differs from any built image, with an empty cache."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "stop", project / "stop",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "sandbox", project / "sandbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / "sandbox" / "changed.txt").write_text("a change no built image has seen\n")
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    code, report, checks = run_doctor({"STOP_CACHE_DIR": str(cache), "STOP_MODEL": None},
                                      cwd=project, pythonpath=project)
    assert code == 1 and report["ok"] is False
    assert checks["docker engine"]["ok"] is True
    image = checks["sandbox image"]
    assert image["ok"] is False and image["required"] is True
    assert "not built" in image["detail"]
    assert image["fix"] == "stop sandbox build"
    model = checks["embedded model"]
    assert model["ok"] is False and model["required"] is True
    assert model["fix"].startswith("stop model install")
    assert f"not installed (expected at {cache}" in model["detail"]


def test_unreachable_engine_is_reported_with_its_fix(tmp_path):
    code, report, checks = run_doctor({"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"})
    assert code == 1
    engine = checks["docker engine"]
    assert engine["ok"] is False and "not reachable" in engine["detail"]
    assert "scripts/setup.sh --only docker" in engine["fix"]
    image = checks["sandbox image"]
    assert image["ok"] is False and "engine is not reachable" in image["detail"]


def test_text_report_names_each_missing_part_and_fix(tmp_path):
    full = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock",
            "STOP_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", "doctor"],
                       cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "MISSING  docker engine" in r.stdout
    assert "fix: bash scripts/setup.sh --only docker" in r.stdout or \
        "fix: sudo bash scripts/setup.sh --only docker" in r.stdout
    assert "fix: stop model install" in r.stdout
    assert "needed part(s) missing" in r.stdout.splitlines()[-1]


def test_corrupt_weights_are_reported_with_their_fix(tmp_path, monkeypatch):
    from stop.models import local as local_model

    monkeypatch.setenv("STOP_CACHE_DIR", str(tmp_path))
    weights = tmp_path / "models" / local_model.EMBEDDED.file
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"GGUF" + b"\0" * 4096)
    check = doctor._model_check("embedded", required=True)
    assert not check.ok
    assert "does not match" in check.detail and str(weights) in check.detail
    assert check.fix == f"rm {weights} && stop model install"


def test_provider_model_needs_its_key_and_not_the_embedded_model(monkeypatch):
    monkeypatch.setenv("STOP_MODEL", "openai/gpt-4o-mini")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("STOP_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    check, local = doctor.check_model_choice()
    assert not check.ok and check.required
    assert "OPENAI_API_KEY" in check.detail
    assert check.fix.startswith("export OPENAI_API_KEY=")
    assert local is None

    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-a-real-key")
    check, local = doctor.check_model_choice()
    assert check.ok and local is None

    monkeypatch.setenv("STOP_MODEL", "anthropic/claude-3-5-haiku-latest")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    check, _ = doctor.check_model_choice()
    assert not check.ok and "ANTHROPIC_API_KEY" in check.fix


def test_local_model_choice_decides_which_weights_are_required(monkeypatch):
    monkeypatch.delenv("STOP_MODEL", raising=False)
    check, local = doctor.check_model_choice()
    assert check.ok and local == "embedded"
    monkeypatch.setenv("STOP_MODEL", "smollm2")
    _, local = doctor.check_model_choice()
    assert local == "smollm2"
    monkeypatch.setenv("STOP_MODEL", "ollama/qwen2.5-coder")
    check, local = doctor.check_model_choice()
    assert check.ok and local is None


def test_python_version_check():
    assert doctor.check_python((3, 11, 0)).ok
    old = doctor.check_python((3, 10, 12))
    assert not old.ok and "older than 3.11" in old.detail and "python3-venv" in old.fix


def test_healthy_ignores_optional_checks():
    checks = [doctor.Check("a", True, ""), doctor.Check("b", False, "x", "fix b", required=False)]
    assert doctor.healthy(checks)
    checks.append(doctor.Check("c", False, "y", "fix c"))
    assert not doctor.healthy(checks)
    text = doctor.render(checks)
    assert "absent" in text and "MISSING" in text and "fix: fix c" in text


@pytest.mark.docker
@pytest.mark.model
def test_machine_set_up_for_tests_is_ready():
    """After `make test`'s set-up: engine, current image, llama-cpp-python and the smoke model."""
    code, report, checks = run_doctor({"STOP_MODEL": "smollm2"})
    bad = {n: c["detail"] for n, c in checks.items() if c["required"] and not c["ok"]}
    assert code == 0 and report["ok"], bad
    assert checks["sandbox image"]["ok"] and "(current)" in checks["sandbox image"]["detail"]
    assert checks["llama-cpp-python"]["ok"]
    assert checks["smoke model (smollm2)"]["ok"]
