"""Spending caps through `stop run`: a real loopback model server with a known price, the
process sandbox, and run folders on disk. A capped run stops with one line that says how to
resume it, and `stop run --resume RUN --max-cost X` continues it without paying twice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

from stop.runs.store import RunStore


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "STOP_"))}
    return {**env, "STOP_RUNS_DIR": str(tmp_path / "runs"), "STOP_CACHE_DIR": str(tmp_path / "cache"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def _stop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from stop.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=600)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def test_caps_stop_a_run_cleanly_and_resume_takes_a_higher_cap(fake, tmp_path):
    env = _env(tmp_path)
    model = ["--model", "openai/gpt-4o-mini", "--api-base", fake.url, "--sandbox", "process"]
    # gpt-4o-mini's price is known to litellm; this server reports 11 + 14 tokens for n=2.
    first = _stop("run", "--quiet", *model, "--max-tokens-total", "20", env=env)
    line = _error_line(first)
    m = re.fullmatch(r"error: token cap reached: 25 of 20 tokens used in this run; resume with a "
                     r"higher cap: `stop run --resume (\S+) --max-tokens-total 45`", line)
    assert m, line
    run_id = m.group(1)
    asked = len(fake.bodies)
    assert asked == 1
    run = RunStore(tmp_path / "runs").open(run_id)
    assert [e["status"] for e in run.events("run_end")] == ["failed"]

    # A higher token cap, and now a cost cap too: one more call (about $1e-5) fits under it.
    second = _stop("run", "--quiet", "--resume", run_id, "--max-tokens-total", "1000000",
                   "--max-cost", "0.000015", env=env)
    line = _error_line(second)
    m = re.fullmatch(r"error: cost cap reached: \$(\S+) of \$1\.5e-05 spent in this run; resume with "
                     r"a higher cap: `stop run --resume " + run_id + r" --max-cost (\S+)`", line)
    assert m, line
    assert float(m.group(1)) >= 1.5e-5 and float(m.group(2)) > float(m.group(1))
    assert len(fake.bodies) == asked + 1  # the first call came from the log, not the server
    cfg = json.loads((run.dir / "config.json").read_text())
    assert (cfg["max_tokens_total"], cfg["max_cost_usd"]) == (1_000_000, 1.5e-5)

    third = _stop("run", "--quiet", "--resume", run_id, "--max-cost", "1", env=env)
    assert third.returncode == 0, third.stderr
    shown = json.loads(_stop("show", run_id, "--json", env=env).stdout)
    assert shown["status"] == "finished" and 0 < shown["cost_usd"] < 1
    fresh = [e["key"] for e in run.events("model_call") if not e.get("cached")]
    assert len(fresh) == len(fake.bodies) and not [k for k, c in Counter(fresh).items() if c > 1]


def test_a_cost_cap_on_a_model_of_unknown_price_is_refused_up_front(fake, tmp_path):
    env = _env(tmp_path)
    proc = _stop("run", "--quiet", "--model", "openai/fake-model", "--api-base", fake.url,
                 "--sandbox", "process", "--max-cost", "1", env=env)
    assert _error_line(proc) == ("error: --max-cost needs a known price, and the price of model "
                                 "openai/fake-model is unknown (litellm has no price for it); drop "
                                 "--max-cost or cap tokens with --max-tokens-total")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert fake.bodies == [] and not list((tmp_path / "runs").glob("*/config.json"))


def test_non_finite_settings_are_refused_before_a_run_exists(tmp_path):
    env = _env(tmp_path)
    for setting, shown in (("improver_wall_s=NaN", "nan"), ("self_improve_wall_s=Infinity", "inf"),
                           ("model_timeout_s=-Infinity", "-inf"), ("max_cost_usd=NaN", "nan")):
        proc = _stop("run", "--quiet", "--sandbox", "process", "--model", "scripted:x.json",
                     "--set", setting, env=env)
        key = setting.split("=")[0]
        line = _error_line(proc)
        assert re.fullmatch(rf"error: {key} must be a positive number of [^,]+, got {shown}", line), line
    assert not list((tmp_path / "runs").glob("*/config.json"))


def test_a_model_of_unknown_price_is_shown_as_unknown_never_as_zero(fake, tmp_path):
    env = _env(tmp_path)
    done = _stop("run", "--quiet", "--model", "openai/fake-model", "--api-base", fake.url,
                 "--sandbox", "process", "--max-tokens-total", "100000", env=env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().rsplit("/", 1)[-1]
    shown = json.loads(_stop("show", run_id, "--json", env=env).stdout)
    assert shown["model_calls"] >= 1 and shown["tokens"] > 0
    assert shown["cost_usd"] is None and shown["round_table"][0]["cost_usd"] is None
    text = _stop("show", run_id, env=env).stdout
    assert "cost unknown" in text and "$0.0000" not in text
