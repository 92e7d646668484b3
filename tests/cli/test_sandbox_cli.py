"""The sandbox commands: build/status, check (the suite), exec (one file by itself)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stop.cli import cli

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def _engine(sandbox):
    """Docker must be up and the image built (the session fixture does both)."""


def test_status_and_build_agree():
    from stop.sandbox.image import image_tag

    out = CliRunner().invoke(cli, ["sandbox", "status", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["exists"] is True
    built = CliRunner().invoke(cli, ["sandbox", "build"])
    assert built.exit_code == 0 and built.output.strip() == image_tag()


def test_check_runs_named_cases_and_reports_json():
    out = CliRunner().invoke(cli, ["sandbox", "check", "19", "exit_early", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["passed"] and data["sanity"] == "ok"
    assert [c["row"] for c in data["cases"]] == [19, 20]
    assert all(c["passed"] for c in data["cases"])


def test_check_refuses_unknown_cases_and_the_process_backend():
    out = CliRunner().invoke(cli, ["sandbox", "check", "no_such_case", "--json"])
    assert out.exit_code == 1 and "no canary matches" in str(out.exception)
    # the suite is really hostile: it must never run outside a container
    out = CliRunner().invoke(cli, ["sandbox", "check", "9", "--sandbox", "process"])
    assert out.exit_code == 2


def test_exec_prints_outcome_and_findings(tmp_path):
    f = tmp_path / "cand.py"
    f.write_text("import os\n\ndef algorithm(a, b, c):\n    os.system('id')\n    return [0]\n")
    out = CliRunner().invoke(cli, ["exec", str(f), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["role"] == "solution" and data["status"] == "ok"
    assert any(x["rule"] == "process-spawn" and x["line"] == 4 for x in data["findings"])
    imp = tmp_path / "imp.py"
    imp.write_text("def improve_algorithm(s, utility, language_model):\n"
                   "    utility(s, use_sandbox=False)\n    return s\n")
    out = CliRunner().invoke(cli, ["exec", str(imp)])
    assert out.exit_code == 0, out.output
    assert "sandbox-flag-off" in out.output and "improver" in out.output


def test_exec_of_a_missing_file_is_a_usage_error(tmp_path):
    out = CliRunner().invoke(cli, ["exec", str(tmp_path / "nope.py")])
    assert out.exit_code == 2
