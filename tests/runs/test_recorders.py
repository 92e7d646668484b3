"""One EventLog per open run, and the tee that writes each once-only result a single time."""

from __future__ import annotations

import threading

from stop.runs.recorders import EventTee, logged_identities
from stop.runs.store import Run, RunStore


def _call(key: str) -> dict:
    return {"scope": "s", "key": key, "texts": ["t"], "cached": False}


def test_two_recorders_on_one_run_interleaved_never_repeat_a_seq(tmp_path):
    run = RunStore(tmp_path).create({})
    a, b = run.recorder(phase="a"), run.recorder(phase="b")
    other = Run(run.dir).recorder(phase="c")  # another Run object for the same folder
    for i in range(5):
        for rec in (a, b, other):
            rec.record("round_start", round=i)
    seqs = [e["seq"] for e in run.events()]
    assert seqs == list(range(15))


def test_recorders_in_threads_keep_seq_unique_and_increasing(tmp_path):
    run = RunStore(tmp_path).create({})
    recs = [run.recorder(attempt=i) for i in range(4)]

    def write(rec):
        for i in range(25):
            rec.record("round_start", round=i)

    threads = [threading.Thread(target=write, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["seq"] for e in Run(run.dir).events()] == list(range(100))


def test_a_new_writer_continues_the_seq_from_the_end_of_the_log(tmp_path):
    run = RunStore(tmp_path).create({})
    for i in range(3):
        run.recorder().record("round_start", round=i)
    del run
    import gc

    gc.collect()  # the process's EventLog for that file is gone; a fresh one reads the tail
    again = RunStore(tmp_path).list()[0]
    again.recorder().record("round_start", round=3)
    assert [e["seq"] for e in again.events()] == [0, 1, 2, 3]


def test_the_tee_writes_each_once_only_result_a_single_time(tmp_path):
    run = RunStore(tmp_path).create({})
    rec = run.recorder(round=1)
    rec.record("model_call", **_call("k1"))
    rec.record("improver_run", scope="s/lm", improver_hash="i1", status="ok")
    rec.record("evaluation", who="incumbent", split="val", scores=[0.5], candidate_hash="h")
    shown = []
    tee = EventTee(run.recorder(), shown.append, logged_identities(run.events())).bind(round=1)
    # What a resume redoes: the same call, the same improver run, the same val split...
    tee.record("model_call", **_call("k1"))
    tee.record("improver_run", scope="s/lm", improver_hash="i1", status="ok")
    tee.record("evaluation", who="incumbent", split="val", scores=[0.5], candidate_hash="h")
    # ...and what it adds: the test split, a new call, and the same call twice in one session.
    tee.record("evaluation", who="incumbent", split="test", scores=[0.4], candidate_hash="h")
    tee.record("model_call", **_call("k2"))
    tee.record("model_call", **_call("k2"))
    types = [(e["type"], e.get("key") or e.get("split") or e.get("scope")) for e in run.events()]
    assert types == [("model_call", "k1"), ("improver_run", "s/lm"), ("evaluation", "val"),
                     ("evaluation", "test"), ("model_call", "k2")]
    assert len(shown) == 6 and all(e["round"] == 1 for e in shown)  # the listener sees all
