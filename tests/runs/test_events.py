"""The event schema: every recorder refuses an unknown or incomplete event; versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stop.runs.events import EVENTS, SCHEMA_VERSION, SchemaError, check_written, problem_of
from stop.runs.recorders import NullRecorder
from stop.runs.store import RunStore

STOP = Path(__file__).parents[2] / "stop"


def test_every_event_type_written_in_stop_is_in_the_schema():
    written = set()
    for p in STOP.rglob("*.py"):
        written |= set(re.findall(r"""\.record\(\s*["']([a-z_]+)["']""", p.read_text()))
    written.add("audit_finding")  # RunRecorder.finding
    assert written, "no record(...) calls found"
    assert written <= set(EVENTS), written - set(EVENTS)


@pytest.mark.parametrize("event, problem", [
    ({"type": "no_such_event"}, "unknown event type 'no_such_event'"),
    ({"type": "round_end", "round": 1}, "round_end event without 'adopted'"),
    ({"type": "evaluation", "round": "1", "who": "incumbent", "split": "val", "scores": [],
      "candidate_hash": "h"}, "evaluation event with 'round' of type str"),
    ({"type": "run_end", "status": True}, "run_end event with 'status' of type bool"),
    ([1, 2], "an event must be a JSON object, not list"),
])
def test_bad_events_are_refused_with_the_reason(event, problem):
    assert problem_of(event) == problem
    with pytest.raises(ValueError, match=re.escape(problem)):
        check_written(event)


def test_recorders_refuse_what_the_schema_does_not_know(tmp_path):
    run = RunStore(tmp_path).create({})
    for rec in (run.recorder(round=1), NullRecorder()):
        with pytest.raises(ValueError, match="unknown event type 'round_ended'"):
            rec.record("round_ended", round=1)
        with pytest.raises(ValueError, match="task_score event without 'score'"):
            rec.record("task_score", task="t", split="val")
    assert run.events() == []
    run.recorder(round=2).record("round_start")  # the bound context supplies `round`
    assert run.events()[0]["round"] == 2


def test_schema_version_is_written_and_a_newer_one_refused(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"task": "x"})
    on_disk = json.loads(run.config_path.read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION
    assert run.config() == {"task": "x"}  # the version is not a setting
    on_disk["schema_version"] = SCHEMA_VERSION + 1
    run.config_path.write_text(json.dumps(on_disk))
    with pytest.raises(SchemaError, match=f"event schema {SCHEMA_VERSION + 1}; this stop reads up to"):
        run.config()


def test_a_run_without_a_version_reads_as_version_one(tmp_path):
    run = RunStore(tmp_path).create({})
    run.config_path.write_text(json.dumps({"task": "old"}))
    assert run.config() == {"task": "old"}
    run.config_path.unlink()
    run.log.append({"type": "run_start", "config": {"task": "old"}, "schema_version": 99})
    with pytest.raises(SchemaError, match="event schema 99"):
        run.config()


def test_the_schema_table_in_the_docs_lists_every_event_type():
    doc = (STOP.parent / "docs" / "internals.md").read_text()
    missing = [name for name in EVENTS if f"| `{name}` |" not in doc]
    assert missing == []
