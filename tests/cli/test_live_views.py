"""The live views of one run and of several: rich tables on a terminal, hostile text kept as text."""

from __future__ import annotations

import io

from stop.cli.display import Display
from stop.cli.sweep import MultiDisplay
from stop.core.config import RunConfig

HOSTILE = "[link=http://x]click[/link] \x1b]8;;http://x\x07"


def test_one_run_draws_its_table_and_the_hostile_phase_stays_text() -> None:
    out = io.StringIO()
    cfg = RunConfig(rounds=2)
    with Display(cfg, "run-a", stream=out, live=True) as view:
        assert view._live is not None
        view({"type": "phase", "round": 1, "phase": HOSTILE})
    text = out.getvalue()
    assert "run-a" in text and "[link=http://x]click[/link]" in text
    assert "\x1b]8;;" not in text and view._live is None


def test_several_runs_draw_a_row_each_and_lines_without_a_terminal() -> None:
    out = io.StringIO()
    items = [(RunConfig(rounds=1, seed=s), f"run-{s}") for s in (3, 4)]
    with MultiDisplay(items, stream=out, live=True) as view:
        view.listener(1)({"type": "phase", "round": 1, "phase": "self-improvement"})
    rows = [ln.split() for ln in out.getvalue().splitlines()]
    assert ["3", "run-3", "0/1"] == rows[1][:3] and ["4", "run-4", "1/1"] == rows[3][:3], rows
    plain = io.StringIO()
    with MultiDisplay(items, stream=plain) as view:  # not a terminal: no live table
        assert view._live is None
        view.listener(0)({"type": "phase", "round": 1, "phase": "self-improvement"})
    assert "self-improvement" in plain.getvalue()
