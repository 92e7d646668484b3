"""The web view's parts without a browser: escaping, the run index, the log reader, phases."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import uiruns

from stop.runs.store import Run
from stop.runs.summary import summarize
from stop.ui import code, live
from stop.ui.index import RunIndex, index_path
from stop.ui.loaded import EventCache, LoadedRun
from stop.ui.site import Site

TEMPLATES = Path(__file__).parents[2] / "stop" / "ui" / "templates"
HOSTILE = uiruns.HOSTILE_GOOD + "\rX\x0bY\x85Z\u2028W\n"


def test_code_view_escapes_before_it_colours():
    lines = code.highlight_lines(HOSTILE)
    html = "\n".join(lines)
    # Line numbers are Python's (\r is a break; \x0b, \x85, \u2028 are not), as in findings.
    assert len(lines) == HOSTILE.replace("\r", "\n").count("\n")
    assert lines[-1].striptags() == "X\\x0bY\\x85Z\\u2028W"
    assert "<script" not in html and "<img" not in html and "<a " not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    for raw in ("\x1b", "\x07", "\u202e", "\r", "\x0b", "\x85", "\u2028"):
        assert raw not in html
    shown = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    assert "\\x1b]0;pwned-title" in shown and "\\u202e" in shown
    assert "<script>window.__pwned = 1</script>" in shown  # as text, exactly as written
    # Colouring happened: keywords and strings got Pygments' classes, and nothing else did.
    assert '<span class="k">def</span>' in html
    assert set(re.findall(r'class="([^"]*)"', html)) <= {
        "k", "kn", "nn", "n", "o", "p", "s2", "s1", "se", "c1", "nf", "kc", "ow", "w", "mi",
        "sa", "nb", "err", "fm", "bp", "ch", "cm", "si", "sd", "nd", "mf", "ne", "sr", "sb", "ss"}


def test_diff_rows_escape_and_mark_changes():
    old = "def f():\n    return 1\n"
    new = "def f():\n    return '<script>x</script>'\n"
    rows = code.diff_rows(old, new)
    kinds = [r.kind for r in rows]
    assert kinds == ["hunk", "same", "del", "add"]
    assert rows[0].html == "@@ -1,2 +1,2 @@"
    assert "&lt;script&gt;" in rows[3].html and "<script" not in rows[3].html
    assert (rows[2].old, rows[2].new, rows[3].old, rows[3].new) == (2, None, None, 2)
    assert code.diff_rows(old, old) == []


def test_templates_never_trust_markup_or_inline_code():
    for t in TEMPLATES.glob("*.html"):
        text = t.read_text()
        assert "|safe" not in text and "| safe" not in text, t.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), t.name
        assert not re.search(r"\son[a-z]+\s*=", text), t.name
        assert "style=" not in text and "<style" not in text, t.name


def test_pages_escape_values_in_text_and_attributes(tmp_path):
    site = Site(tmp_path / "runs", None)
    hostile = '"><script>alert(1)</script>\x1b]52;c;eA==\x07'
    html = site.render("error.html", 404, status_code=404, message=hostile).body
    assert "<script>alert" not in html and "\x1b" not in html
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\\x1b]52;c;eA==\\x07" in html
    rows = [{"id": hostile, "kind": "run", "status": "running", "error": hostile,
             "findings": 1, "top_severity": "high"}]
    html = site.render("_runs_table.html", rows=rows, total=1, running=1, query={"task": hostile},
                       f={"sort": "id", "descending": True, "task": hostile}).body
    assert "<script>" not in html and '"><script' not in html and "\x1b" not in html
    assert 'data-run="&#34;&gt;&lt;script&gt;' in html  # the attribute value stays one value


def _copy_fixture(root: Path) -> Run:
    return uiruns.copy_report_run(root)


def test_index_rebuilds_only_what_changed(tmp_path):
    run = _copy_fixture(tmp_path / "runs")
    cache = EventCache()
    idx = RunIndex(tmp_path / "runs", tmp_path / "cache" / "i.sqlite", cache)
    assert idx.refresh() == 1 and idx.refresh() == 0
    (row,) = idx.rows()
    s = summarize(run)
    assert (row["status"], row["rounds_done"], row["tokens"], row["model_calls"]) == (
        s["status"], s["rounds_done"], s["tokens"], s["model_calls"])
    assert row["best_val"] == pytest.approx(s["best"]["val"]) and row["transfer"] == 1
    assert row["findings"] == 3 and row["top_severity"] == "critical"
    call = {**run.events("model_call")[0], "seq": 999, "key": "k" * 64, "prompt_tokens": 10,
            "completion_tokens": 5, "cached": False}
    with open(run.dir / "events.jsonl", "a") as f:
        f.write(json.dumps(call) + "\n")
    assert idx.refresh() == 1
    assert idx.rows()[0]["tokens"] == s["tokens"] + 15
    idx.close()
    # The index is a cache: deleted, it is rebuilt from the logs; corrupt, it is replaced.
    (tmp_path / "cache" / "i.sqlite").unlink()
    idx = RunIndex(tmp_path / "runs", tmp_path / "cache" / "i.sqlite", EventCache())
    assert idx.refresh() == 1 and idx.rows()[0]["tokens"] == s["tokens"] + 15
    idx.close()
    (tmp_path / "cache" / "i.sqlite").write_bytes(b"not a database" * 100)
    idx = RunIndex(tmp_path / "runs", tmp_path / "cache" / "i.sqlite", EventCache())
    assert idx.refresh() == 1
    shutil.rmtree(run.dir)
    assert idx.refresh() == 0 and idx.rows() == []


def test_index_lists_damaged_runs_beside_healthy_ones(tmp_path):
    root = tmp_path / "runs"
    _copy_fixture(root)
    bad = root / "20260102-000000-bad"
    bad.mkdir()
    (bad / "config.json").write_text("[1, 2]")
    (bad / "events.jsonl").write_bytes(b'[1]\n{"type": "round_end"}\n\xff\xfe\n')
    rebuilt = root / "20260103-000000-noconfig"
    rebuilt.mkdir()
    start = {"seq": 0, "ts": 5.0, "type": "run_start", "config": {"task": "parity_noise"}}
    (rebuilt / "events.jsonl").write_text(json.dumps(start) + "\n")
    idx = RunIndex(root, None, EventCache())
    idx.refresh()
    rows = {r["id"]: r for r in idx.rows()}
    assert len(rows) == 3 and rows["20260101-000000-fixture"]["status"] == "finished"
    assert rows[bad.name]["status"] == "damaged" and "\n" not in rows[bad.name]["error"]
    assert "not an object" in rows[bad.name]["error"]
    assert rows[rebuilt.name]["task"] == "parity_noise" and rows[rebuilt.name]["status"] == "killed"
    assert "config.json is missing" in rows[rebuilt.name]["error"]


def test_index_sits_under_the_cache_dir(tmp_path):
    p = index_path(tmp_path / "cache", tmp_path / "runs")
    assert p.parent == tmp_path / "cache" / "ui" and p.suffix == ".sqlite"


def test_log_reader_takes_only_whole_lines_and_follows_appends(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"type": "a"}\n"text"\n\xff\n{"type": "b"}\n{"type": "c", "tor')
    cache = EventCache()
    events, bad = cache.read(log)
    assert [e["type"] for e in events] == ["a", "b"] and bad == 2
    with open(log, "ab") as f:
        f.write(b'n": 1}\n{"type": "d"}\n')
    events, _ = cache.read(log)
    assert [e["type"] for e in events] == ["a", "b", "c", "d"] and events[2]["torn"] == 1
    replaced = tmp_path / "new.jsonl"
    replaced.write_text('{"type": "z"}\n')
    os.replace(replaced, log)  # another file under the same name: read from its start
    assert [e["type"] for e in cache.read(log)[0]] == ["z"]
    run = LoadedRun.load(tmp_path, cache)
    assert run.events("z") == [{"type": "z"}]


def test_phase_follows_the_steps_of_a_round():
    events = [{"type": "run_start", "pid": 1}, {"type": "round_start", "round": 1}]
    assert live.current_phase(events, "running") == \
        "round 1: self-improvement: the improver rewrites itself"
    events.append({"type": "model_call", "round": 1, "scope": "s0/r1/eval/incumbent-ab/t0/lm"})
    assert live.current_phase(events, "running") == "round 1: re-evaluating the incumbent"
    events.append({"type": "evaluation", "round": 1, "who": "incumbent", "split": "test"})
    assert live.current_phase(events, "running") == "round 1: re-evaluating the candidate"
    events.append({"type": "evaluation", "round": 1, "who": "candidate", "split": "test"})
    assert live.current_phase(events, "running") == "round 1: deciding on adoption"
    events.append({"type": "round_end", "round": 1})
    assert live.current_phase(events, "running") == "between rounds"
    assert live.open_round(events) is None
    assert live.current_phase(events, "finished") == "finished"


def test_the_runs_list_comes_in_pages(tmp_path):
    from stop.ui import pages_runs
    from stop.ui.site import BadRequest

    root = tmp_path / "runs"
    for i in range(7):
        d = root / f"2026010{i + 1}-000000-r{i}"
        d.mkdir(parents=True)
        cfg = {"task": "parity_noise", "rounds": 1}
        (d / "config.json").write_text(json.dumps(cfg))
        start = {"seq": 0, "ts": 1000.0 + i, "type": "run_start", "config": cfg}
        end = {"seq": 1, "ts": 1001.0 + i, "type": "run_end", "status": "finished"}
        (d / "events.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
    site = Site(root, None)

    def ids(html: str) -> list[str]:
        return re.findall(r'data-run="([^"]+)"', html)

    page2 = pages_runs.runs_table(site, {}, {"per": "3", "page": "2", "task": "parity_noise"}).body
    assert ids(page2) == ["20260104-000000-r3", "20260103-000000-r2", "20260102-000000-r1"]
    assert 'id="runs-count">7<' in page2 and "4–6" in page2 and "page 2 of 3" in page2
    links = dict(re.findall(r'rel="(prev|next)" href="/\?([^"]+)"', page2))
    assert links["prev"].endswith("page=1") and links["next"].endswith("page=3")
    assert "task=parity_noise" in links["next"] and "per=3" in links["next"]
    last = pages_runs.runs_table(site, {}, {"per": "3", "page": "9"}).body  # past the end
    assert ids(last) == ["20260101-000000-r0"] and 'rel="next"' not in last
    whole = pages_runs.runs_table(site, {}, {}).body  # 7 runs fit the default page
    assert len(ids(whole)) == 7 and "runs-pages" not in whole
    page = pages_runs.runs_page(site, {}, {"per": "3", "page": "2"}).body
    assert 'data-poll-src="/runs/table?per=3&amp;page=2"' in page  # the live update keeps the page
    for bad in ({"page": "0"}, {"page": "two"}, {"per": "5000"}):
        with pytest.raises(BadRequest) as e:
            pages_runs.runs_table(site, {}, bad)
        assert "\n" not in str(e.value) and "whole number" in str(e.value)
