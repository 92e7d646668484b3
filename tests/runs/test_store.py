"""The event log and run store: crash safety, torn lines, run lookup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from stop.runs.store import EventLog, RunStore, StoreError
from stop.sandbox.records import AuditFinding


def test_append_and_read_back_in_order(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    for i in range(5):
        log.append({"type": "tick", "i": i})
    events = list(log.read())
    assert [e["i"] for e in events] == [0, 1, 2, 3, 4]
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4]


def test_torn_last_line_is_skipped_then_repaired(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append({"type": "a"})
    log.append({"type": "b"})
    with open(path, "a") as f:
        f.write('{"type": "half", "x": ')
    assert EventLog(path).torn_tail()
    assert [e["type"] for e in EventLog(path).read()] == ["a", "b"]

    fresh = EventLog(path)
    fresh.append({"type": "c"})
    events = list(fresh.read())
    assert [e["type"] for e in events] == ["a", "b", "c"]
    assert events[-1]["seq"] == 2
    assert not fresh.torn_tail()


def test_kill_during_appends_leaves_a_readable_log(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from stop.runs.log import EventLog
        log = EventLog({str(path)!r})
        i = 0
        while True:
            log.append({{"type": "n", "i": i, "pad": "x" * 2000}})
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer])
    try:
        import time

        deadline = time.time() + 20
        while time.time() < deadline:
            if path.exists() and path.stat().st_size > 50_000:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    events = list(EventLog(path).read())
    assert len(events) > 10
    assert [e["i"] for e in events] == list(range(len(events)))


def test_run_store_create_open_prefix_latest(tmp_path):
    store = RunStore(tmp_path)
    a = store.create({"task": "parity_noise"}, label="alpha")
    b = store.create({"task": "maxcut"}, label="beta")
    assert store.open(a.id).id == a.id
    assert store.open(b.id[:-2] + b.id[-2:]).id == b.id
    assert store.open("latest").id in {a.id, b.id}
    assert {r.id for r in store.list()} == {a.id, b.id}
    assert a.config()["task"] == "parity_noise"


def test_run_store_errors_are_one_line(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(StoreError, match="no runs"):
        store.open("latest")
    store.create({}, label="x")
    store.create({}, label="y")
    with pytest.raises(StoreError, match="no run matches"):
        store.open("zzz")
    with pytest.raises(StoreError, match="matches 2 runs"):
        store.open("2")


def test_corrupt_config_is_reported_not_lost(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"task": "x"})
    run.config_path.write_text("{not json")
    with pytest.raises(StoreError, match="config.json is corrupt"):
        run.config()
    assert run.config_path.read_text() == "{not json"


def test_recorder_stamps_context_and_findings(tmp_path):
    run = RunStore(tmp_path).create({})
    rec = run.recorder(round=2)
    rec.record("evaluation", who="incumbent", split="val", scores=[0.5], mean=0.5,
               candidate_hash="h0")
    rec.finding(AuditFinding(rule="network", severity="high", layer="runtime",
                             role="solution", attempted="connect 1.1.1.1:80", action="blocked"))
    evals = run.events("evaluation")
    assert evals[0]["round"] == 2 and evals[0]["mean"] == 0.5
    (finding,) = run.findings()
    assert finding.run_id == run.id and finding.round == 2 and finding.rule == "network"


def test_improver_and_json_files_are_written_atomically(tmp_path):
    run = RunStore(tmp_path).create({})
    run.write_improver(0, "def improve_algorithm(a, b, c):\n    return a\n")
    assert "improve_algorithm" in run.read_improver(0)
    run.write_json("summary.json", {"best": 0.7})
    assert run.read_json("summary.json") == {"best": 0.7}
    assert not [p for p in run.dir.rglob("*.tmp")]
    with pytest.raises(StoreError):
        run.read_improver(5)
    json.loads(run.config_path.read_text())


def test_candidate_sources_are_kept_once_under_their_hash(tmp_path):
    run = RunStore(tmp_path).create({})
    source = "def algorithm(x):\n    return x\n"
    digest = run.write_candidate(source)
    assert run.candidate_path(digest).read_text() == source
    assert run.write_candidate(source) == digest
    assert len(list((run.dir / "candidates").iterdir())) == 1
