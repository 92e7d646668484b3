"""No byte a candidate wrote reaches the user's terminal as a control sequence.

A real run (scripted model, real loop, real Docker sandbox) adopts an improver whose source and
output carry CSI, OSC 0 (window title), OSC 8 (a lying hyperlink), OSC 52 (clipboard), BEL, a
carriage return, C1 controls and a bidi override, and which switches the sandbox flag off on a
line that carries them too, so the audit shows that line. Every read command is then run as a
real `stop` process and its stdout and stderr are checked byte by byte; `--json` keeps the exact
text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stop.cli.safe import visible
from stop.core.config import RunConfig
from stop.core.loop import execute, new_run
from stop.models import ScriptedModel
from stop.runs.store import RunStore

CSI = "\x1b[2J\x1b[31m"
OSC_TITLE = "\x1b]0;pwned\x07"
OSC_LINK = "\x1b]8;;https://evil.example/\x1b\\safe link\x1b]8;;\x1b\\"
OSC_CLIP = "\x1b]52;c;cm0gLXJmIH4K\x07"
HOSTILE = CSI + OSC_TITLE + OSC_LINK + OSC_CLIP + "\a\r\x9b31m\x9d0;x\x9c\u202eevil"
# A carriage return would end a comment in Python source: the source carries the rest raw, the
# output (the banner, decoded at run time) carries all of it.
IN_SOURCE = HOSTILE.replace("\r", "")
# Raw bytes no output of a read command may contain: ESC, BEL, CR, C1 (as UTF-8), bidi override.
FORBIDDEN = [b"\x1b", b"\x07", b"\r", "\x9b".encode(), "\x9d".encode(), "\x9c".encode(),
             "\u202e".encode()]

IMPROVER = f'''# {IN_SOURCE}
EXHAUSTIVE = """
import itertools

import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    X, y = np.asarray(train_samples), np.asarray(train_parity)
    masks = np.array(list(itertools.product([0, 1], repeat=X.shape[1])))
    errors = ((X @ masks.T) % 2 != y[:, None]).sum(axis=0)
    best = masks[int(errors.argmin())]
    return [int(v) for v in (np.asarray(test_samples) @ best) % 2]
"""
BANNER = {HOSTILE!r}


def improve_algorithm(initial_solution, utility, language_model):
    print(BANNER)
    if "def improve_algorithm" in initial_solution:
        return initial_solution
    utility(EXHAUSTIVE, use_sandbox=False)  # {IN_SOURCE}
    return EXHAUSTIVE
'''
ZEROS = "def algorithm(train_samples, train_parity, test_samples):\n    return [0] * len(test_samples)\n"
SETTINGS = {"rounds": 1, "n_tests": 1, "lm_budget": 1, "max_responses_per_call": 1,
            "utility_budget": 2, "meta_lm_budget": 1, "meta_max_responses_per_call": 1,
            "meta_utility_budget": 2, "improver_wall_s": 60, "self_improve_wall_s": 300,
            "jobs": 2}


def test_visible_writes_every_control_character_out():
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("\x1b[31m") == "\\x1b[31m"
    assert visible("\a\r\x00\x7f") == "\\x07\\x0d\\x00\\x7f"
    assert visible("\x9b\x85") == "\\x9b\\x85"
    assert visible("\u202eabc\u2066") == "\\u202eabc\\u2066"
    assert visible("\udc80") == "\\udc80"
    assert visible("plain ü ✓ 中") == "plain ü ✓ 中"
    out = visible(HOSTILE).encode()
    assert not any(b in out for b in FORBIDDEN)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig.from_profile("tiny", model="scripted", seed_improver="sandbox", **SETTINGS)
    run = new_run(cfg, RunStore(root))
    fence = f"Improved.\n```python\n{IMPROVER}```\n"
    model = ScriptedModel([{"match": "def improve_algorithm", "texts": [fence]},
                           {"match": None, "texts": [f"```python\n{ZEROS}```"]}])
    execute(run, cfg, model=model, sandbox=sandbox)
    return run


def _stop(run_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STOP_RUNS_DIR=str(run_root), LITELLM_LOCAL_MODEL_COST_MAP="True")
    return subprocess.run([sys.executable, "-m", "stop", *args], capture_output=True, env=env,
                          timeout=300)


def _assert_clean(p: subprocess.CompletedProcess, what: str) -> None:
    for stream, data in (("stdout", p.stdout), ("stderr", p.stderr)):
        bad = [b for b in FORBIDDEN if b in data]
        assert not bad, f"{what}: {stream} carries {bad}"


@pytest.mark.docker
def test_read_commands_show_hostile_bytes_as_text(hostile_run):
    run, root = hostile_run, hostile_run.dir.parent
    ends = list(run.events("round_end"))
    assert ends and ends[0]["adopted"], "the hostile improver must be adopted for this test"
    findings = [e["finding"] for e in run.events("audit_finding")
                if e["finding"]["rule"] == "sandbox-flag-off"]
    assert findings and any("\x1b" in (f.get("source_line") or "") for f in findings)
    fid = findings[0]["id"]

    commands = [("runs",), ("show", run.id), ("show", run.id, "--round", "1", "--code"),
                ("diff", run.id, "0", "1"), ("audit", run.id), ("audit", run.id, "--summary"),
                ("audit", "show", fid[:8]), ("show", "no-such-run-\x1b]0;x\x07")]
    saw_escape = False
    for args in commands:
        p = _stop(root, *args)
        _assert_clean(p, " ".join(args))
        saw_escape |= b"\\x1b]52;c;" in p.stdout
    assert saw_escape, "the hostile text must still be shown, as escapes"


@pytest.mark.docker
def test_json_output_keeps_the_exact_text(hostile_run):
    run, root = hostile_run, hostile_run.dir.parent
    p = _stop(root, "audit", run.id, "--json")
    _assert_clean(p, "audit --json")
    lines = [f.get("source_line") or "" for f in json.loads(p.stdout)]
    assert any(OSC_CLIP in line and CSI in line for line in lines)  # JSON-escaped on the wire


@pytest.mark.docker
def test_exec_of_a_hostile_file_prints_no_control_bytes(tmp_path, docker_required):
    f = tmp_path / "hostile.py"
    f.write_text(f"import socket  # {IN_SOURCE}\nprint({HOSTILE!r})\n"
                 "def algorithm(train_samples, train_parity, test_samples):\n"
                 f"    print({HOSTILE!r})\n    return [0] * len(test_samples)\n")
    p = _stop(tmp_path / "runs", "exec", str(f))
    _assert_clean(p, "exec")
    assert b"\\x1b" in p.stdout + p.stderr
