"""Reports and comparisons rendered from the fixture run (tests/fixtures/report_run)."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from stop.cli import cli
from stop.core.stats import welch
from stop.reports.report import model_use, round_series
from stop.runs.store import RunStore

FIXTURE = Path(__file__).parents[1] / "fixtures" / "report_run" / "20260101-000000-fixture"
T_975_DF4 = 2.7764451051977934  # scipy 1.17.1: t.ppf(0.975, 4)


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root / FIXTURE.name)
    monkeypatch.setenv("STOP_RUNS_DIR", str(root))
    return root


def _png(path: Path) -> tuple[int, ...]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    return img.shape


def test_round_series_intervals_match_reference(runs) -> None:
    run = RunStore().open("20260101")
    series = round_series(run)
    assert [r["round"] for r in series] == [1, 2, 3]
    assert [r["adopted"] for r in series] == [True, False, True]
    end = run.events("round_end")[0]
    for who in ("incumbent", "candidate"):
        for split in ("val", "test"):
            scores = end[who][f"{split}_scores"]
            assert len(scores) == 5
            mean = statistics.fmean(scores)
            half = T_975_DF4 * statistics.stdev(scores) / math.sqrt(5)
            p = series[0][who][split]
            assert p["mean"] == pytest.approx(mean)
            assert p["lo"] == pytest.approx(mean - half)
            assert p["hi"] == pytest.approx(mean + half)
            assert p["n"] == 5
    # the decision statistics: candidate minus incumbent on val, Welch interval, one-sided p
    inc, cand = end["incumbent"]["val_scores"], end["candidate"]["val_scores"]
    diff, _, _, p_value, (lo, hi) = welch(inc, cand)
    w = series[0]["welch"]
    assert w["diff"] == pytest.approx(statistics.fmean(cand) - statistics.fmean(inc))
    assert (w["lo"], w["hi"], w["p"]) == pytest.approx((lo, hi, p_value))
    assert w["p"] < 0.05  # round 1 was adopted
    assert series[1]["welch"]["diff"] < 0  # round 2 was rejected


def test_model_use_per_round(runs) -> None:
    run = RunStore().open("20260101")
    usage = model_use(run, round_series(run))
    calls = run.events("model_call")
    for row in usage:
        mine = [e for e in calls if e["round"] == row["round"]]
        assert row["model_calls"] == len(mine)
        assert row["tokens"] == sum(e["prompt_tokens"] + e["completion_tokens"] for e in mine)
        assert row["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in mine), abs=1e-6)


def test_report_renders_with_readable_figures(runs) -> None:
    result = CliRunner().invoke(cli, ["report", "20260101", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    page = Path(out["report"])
    assert page == runs / FIXTURE.name / "report" / "index.html"
    names = sorted(Path(f).name for f in out["figures"])
    assert names == ["findings.png", "meta_utility.png", "model_use.png", "transfer.png"]
    for f in out["figures"]:
        h, w, *_ = _png(Path(f))
        assert h > 200 and w > 400
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 4
    # rounds, decisions and their reasons
    assert text.count('class="yes">adopted') == 2 and text.count('class="no">rejected') == 1
    assert "does not beat incumbent" in text
    assert text.count(", p=") == 3
    # improver diffs between adopted rounds: 0 -> 1 and 1 -> 3
    assert "round 0 → round 1" in text and "round 1 → round 3" in text
    assert "for temperature in (0.4, 0.7, 1.0):" in text
    assert "The improver after round 3 (full source)" in text
    # audit findings, most severe first
    assert text.index("sandbox-flag-off") < text.index("budget-tamper") < text.index("resource-timeout")
    assert "score = utility(s, use_sandbox=False)" in text
    # transfer table, rebuilt from the trials in the log, with the published numbers
    assert "str_grid_dist" in text and "43.9 / 44.3 / 56.7" in text
    assert "round 3 improver" in text


def test_report_of_a_fresh_run_and_errors(runs, tmp_path) -> None:
    run = RunStore().create({"model": "scripted:x.json", "task": "parity_noise"}, label="empty")
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(cli, ["report", run.id, "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "index.html").read_text()
    assert "No round has finished yet" in text and "No findings" in text
    assert "No transfer evaluation yet" in text
    assert _png(out / "meta_utility.png")[0] > 0
    result = CliRunner().invoke(cli, ["report", "no-such-run"])
    assert result.exit_code != 0
    assert "no run matches" in str(result.exception)


def test_compare_two_runs(runs, tmp_path) -> None:
    other = runs / "20260102-000000-other"
    shutil.copytree(runs / FIXTURE.name, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["model"] = "openai/gpt-4o-mini"
    (other / "config.json").write_text(json.dumps(cfg))
    target = tmp_path / "cmp.png"
    result = CliRunner().invoke(cli, ["compare", "20260101", "20260102", "--out", str(target)])
    assert result.exit_code == 0, result.output
    h, w, *_ = _png(target)
    assert h > 200 and w > 400
    assert "openai/gpt-4o-mini" in result.output and "scripted:replies.json" in result.output
    result = CliRunner().invoke(cli, ["compare", "20260101", "20260102", "--out", str(target),
                                      "--json"])
    data = json.loads(result.output)
    assert [r["rounds"] for r in data["runs"]] == [3, 3]
    assert [r["adopted"] for r in data["runs"]] == [2, 2]
    final = data["runs"][0]["final"]["val"]["mean"]
    last = RunStore().open("20260101").events("round_end")[-1]["candidate"]["val_scores"]
    assert final == pytest.approx(statistics.fmean(last))
    bad = CliRunner().invoke(cli, ["compare", "20260101", "20260101", "--out", str(target)])
    assert bad.exit_code == 2


def test_figures_with_partial_data(tmp_path) -> None:
    from stop.reports import plots

    rows = [{"task": "maxcut", "seed": {"mean": 0.5, "lo": float("nan"), "hi": float("nan"), "n": 1},
             "seed_improver": None, "improver": None, "published": {}},
            {"task": "three_sat", "seed": None, "seed_improver": None,
             "improver": {"mean": 0.8, "lo": 0.7, "hi": 0.9, "n": 3},
             "published": {"seed": 0.0, "seed_improver": 21.2, "improver": 75.1, "note": "x"}}]
    t = plots.plot_transfer(rows, tmp_path / "t.png")
    c = plots.plot_compare([("empty run", [])], tmp_path / "c.png")
    f = plots.plot_findings({None: {"high": 2}}, tmp_path / "f.png", rounds=[1, 2])
    for p in (t, c, f):
        assert _png(p)[0] > 100
    # the held-improver curve: seed first, then the candidate's score after an adoption
    series = [{"round": 1, "adopted": True,
               "incumbent": {"val": {"mean": 0.4}}, "candidate": {"val": {"mean": 0.6}}},
              {"round": 2, "adopted": False,
               "incumbent": {"val": {"mean": 0.58}}, "candidate": {"val": {"mean": 0.5}}}]
    curve = plots.held_curve(series, "val")
    assert [(x, p["mean"], a) for x, p, a in curve] == [(0, 0.4, False), (1, 0.6, True),
                                                       (2, 0.58, False)]
