"""Each page of the web view, in Chromium, shows the numbers stop itself computes for the runs."""

from __future__ import annotations

import pytest
import uiruns

from stop.experiments import improve_summary as IS
from stop.experiments import transfer as T
from stop.experiments import unsandbox as X
from stop.reports import audit as A
from stop.reports.report import _fmt, _welch_cell, model_use, round_series
from stop.runs.store import RunStore
from stop.runs.summary import summarize

pytestmark = [pytest.mark.ui, pytest.mark.docker]


def cells(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).locator("td").all_inner_texts()]


def test_runs_page_lists_filters_and_sorts_runs(page, server, ui_runs, shoot):
    page.goto(server.base + "/")
    everything = RunStore(ui_runs["root"]).list()
    assert page.locator("tr.run-row").count() == len(everything) == 4
    run = ui_runs["scripted"]
    s = summarize(run)
    row = cells(page, f'tr.run-row[data-run="{run.id}"]')
    assert row[1:5] == ["parity_noise", "scripted", "tiny", "finished"]
    assert row[5] == "2 / 2"
    assert row[6] == f"{s['best']['val']:.3f}" and row[7] == f"{s['best']['test']:.3f}"
    assert row[8] == f"${s['cost_usd']:.4f}" and row[9] == f"{s['tokens']:,}"
    counted = [e for e in A.entries(A.run_findings(run)) if e.counted]
    assert row[10].startswith(str(len(counted))) and "high" in row[10]
    shoot("runs")
    # filter by model, then by status, through the form (a GET: nothing is written)
    page.select_option("select[name=model]", "scripted")
    page.click("form.filters button[type=submit]")
    want = {r.id for r in everything if summarize(r)["model"] == "scripted"}
    assert len(want) == 3 and "model=scripted" in page.url
    assert {r.get_attribute("data-run") for r in page.locator("tr.run-row").all()} == want
    page.goto(server.base + "/?status=finished&task=parity_noise")
    want = [r for r in everything if summarize(r)["task"] == "parity_noise"
            and summarize(r)["status"] == "finished"]
    assert page.locator("tr.run-row").count() == len(want) == 3
    # sort by tokens, both ways
    page.goto(server.base + "/?sort=tokens&order=asc")
    ids = [r.get_attribute("data-run") for r in page.locator("tr.run-row").all()]
    tokens = {r.id: summarize(r)["tokens"] for r in everything}
    assert ids == sorted(ids, key=lambda i: (tokens[i], i))
    page.goto(server.base + "/?sort=bogus")
    assert "cannot sort by 'bogus'" in page.inner_text("main")
    # pages of 3, sorted by tokens: the next link leads to the fourth run, and back
    page.goto(server.base + "/?sort=tokens&order=asc&per=3")
    assert [r.get_attribute("data-run") for r in page.locator("tr.run-row").all()] == ids[:3]
    page.click("a[rel=next]")
    assert "page=2" in page.url and page.inner_text("#runs-pages").startswith("← previous")
    assert [r.get_attribute("data-run") for r in page.locator("tr.run-row").all()] == ids[3:]
    page.click("a[rel=prev]")
    assert page.locator("tr.run-row").count() == 3


def test_run_page_shows_rounds_intervals_and_welch(page, server, ui_runs, shoot):
    run = ui_runs["report"]
    page.goto(f"{server.base}/runs/{run.id}")
    s = summarize(run)
    series = round_series(run)
    usage = {u["round"]: u for u in model_use(run, series)}
    for r in series:
        row = cells(page, f'tr.round-row[data-round="{r["round"]}"]')
        assert row[0] == f"round {r['round']}"
        assert row[1:5] == [_fmt(r["incumbent"]["val"]), _fmt(r["candidate"]["val"]),
                            _fmt(r["incumbent"]["test"]), _fmt(r["candidate"]["test"])]
        assert row[5] == _welch_cell(r["welch"]) and ", p=" in row[5]
        assert row[6] == ("adopted" if r["adopted"] else "rejected") and row[7] == r["reason"]
        assert row[8] == f"{usage[r['round']]['model_calls']:,}"
        assert row[9] == f"{usage[r['round']]['tokens']:,}"
    assert page.inner_text("#run-calls") == f"{s['model_calls']:,}"
    assert page.inner_text("#run-tokens") == f"{s['tokens']:,}"
    assert page.inner_text("#run-cost") == f"${s['cost_usd']:.4f}"
    assert page.inner_text("#run-status").startswith("finished")
    # the curve: one point per round for each of the four lines, bars where n > 1
    assert page.locator("svg.chart circle.dot").count() == 4 * len(series)
    assert page.locator("svg.chart line.bar").count() == 4 * len(series)
    assert page.locator("svg.chart circle.candidate.val.adopted").count() == 2
    shoot("run")


def test_round_page_shows_source_diff_and_scored_candidates(page, server, ui_runs, shoot):
    run = ui_runs["scripted"]
    end = run.events("round_end")[0]
    page.goto(f"{server.base}/runs/{run.id}/rounds/1")
    facts = page.inner_text("table.facts")
    assert "adopted" in facts and end["candidate_hash"] in facts
    assert _fmt(round_series(run)[0]["candidate"]["val"]) in facts
    # the diff against the seed improver, coloured: added lines carry Pygments' classes
    added = page.locator(".diff tr.add")
    assert added.count() >= 10 and page.locator(".diff tr.del").count() >= 1
    assert page.locator(".diff tr.add span.s2").count() >= 5  # EXHAUSTIVE's string lines
    assert page.locator(".diff span.k").filter(has_text="def").count() >= 1
    assert "return EXHAUSTIVE" in page.locator(".diff").inner_text()
    # the two proposals, each with its meta-utility
    meta = {e["solution_hash"]: e["value"] for e in run.events("utility_call")
            if e["utility"] == "meta" and e["round"] == 1}
    rows = page.locator("table.scored tbody tr")
    assert rows.count() == len(meta) == 3  # the seed, the good one, the raising one
    for r in rows.all():
        h = r.locator("td").nth(0).inner_text().split()[0]
        assert r.locator("td").nth(1).inner_text() == f"{meta[h]:.3f}"
    assert page.locator("table.scored").get_by_text("raised RuntimeError").count() == 1
    calls = [e for e in run.events("model_call") if e["round"] == 1]
    assert page.inner_text("main").count("s0/r1/") >= len(calls)
    shoot("round")


def test_audit_pages_filter_and_show_a_finding_in_context(page, server, ui_runs, shoot):
    root = ui_runs["root"]
    page.goto(server.base + "/audit")
    _, found = A.collect(RunStore(root), all_runs=True)
    assert page.locator("tr.finding-row").count() == len(found)
    assert page.inner_text("#audit-count") == str(sum(1 for e in found if e.counted))
    for query, q, run_ref in (("severity=critical", A.FindingQuery(min_severity="critical"), None),
                              ("rule=process-spawn", A.FindingQuery(rules=("process-spawn",)), None),
                              ("role=solution", A.FindingQuery(role="solution"), None),
                              (f"run={ui_runs['report'].id}", None, ui_runs["report"].id)):
        page.goto(f"{server.base}/audit?{query}")
        _, want = A.collect(RunStore(root), run_ref, all_runs=run_ref is None, query=q)
        got = [t.strip() for t in page.locator("tr.finding-row td:first-child").all_inner_texts()]
        assert got == [e.id for e in want], query
    shoot("audit")
    page.goto(server.base + "/audit?rule=no-such-rule")
    assert "unknown rule 'no-such-rule'" in page.inner_text("main")

    run = ui_runs["scripted"]
    static = next(e for e in A.entries(A.run_findings(run))
                  if e.finding.rule == "process-spawn" and e.finding.layer == "static")
    page.goto(f"{server.base}/audit/{static.id}")
    hit = page.locator("#src tr.hit")
    assert hit.count() == 1 and hit.locator("td.ln").inner_text() == str(static.finding.line)
    assert hit.inner_text().split("\n")[-1].startswith("import subprocess  # <script>")
    assert page.locator("#src tr").count() <= 2 * 8 + 1  # the line in its context
    facts = page.inner_text("table.facts")
    assert "the static layer" in facts and "also the runtime layer" in facts
    assert page.inner_text("#action") == static.finding.action
    chain = A.lineage(run, {static.finding.candidate_hash})
    assert page.locator("ol.lineage li").count() == len(chain) == 2
    assert page.inner_text("#descendants").startswith("1 adopted improver")
    shoot("finding")
    page.click("text=Show the whole file")
    assert page.locator("#src tr").count() == len(uiruns.HOSTILE_GOOD.splitlines())


def test_experiments_page_shows_rates_beside_the_papers_and_transfer(page, server, ui_runs,
                                                                     shoot):
    page.goto(server.base + "/experiments")
    s = X.summarize(ui_runs["unsandbox"])
    assert (s["n"], s["flag_off"]["count"]) == (20, 4)
    row = page.locator("table.unsandbox tbody tr").inner_text()
    lo, hi = s["flag_off"]["ci95"]
    assert f"20.00% [{100 * lo:.2f}%, {100 * hi:.2f}%]" in row
    assert "0.42% [0.31%, 0.57%]" in row and "0.12% [0.07%, 0.21%]" in row  # the paper's
    assert page.locator("svg.chart circle.dot.ours").count() == 1
    table = T.load_table(ui_runs["report"])
    text = page.locator("table.transfer").inner_text()
    for r in table["rows"]:
        assert r["task"] in text and T._pct(r["improver"]) in text
    assert "43.9 / 44.3 / 56.7" in text
    # the improve experiment: each arm with its interval, the differences, the paper's 3/25
    d = IS.summarize(ui_runs["improve"], RunStore(ui_runs["root"]))
    (r,) = d["per_run"]
    row = page.locator("table.improve tbody tr").inner_text()
    for arm in IS.ARMS:
        assert IS._pct(r["arms"][arm]) in row
    assert IS._pts(r["diff"]["IT-I0"]) in row and r["diff"]["IT-I0"] > 0.3
    k, n = d["improved"]["k"], d["improved"]["n"]
    assert f"at least 3 points: {k}/{n} [Wilson 95%" in page.inner_text("p.improved")
    assert "3/25" in page.inner_text("p.improved")
    shoot("experiments")


def test_a_browser_without_the_token_is_refused(browser, server, ui_runs):
    context = browser.new_context()
    try:
        page = context.new_page()
        for url in (server.base + "/", f"{server.base}/runs/{ui_runs['report'].id}",
                    server.base + "/?token=" + "A" * len(server.token)):
            r = page.goto(url)
            assert r.status == 401, url
            assert "needs its token" in page.inner_text("body")
            assert ui_runs["report"].id not in page.content()
        assert context.cookies() == []
        assert page.goto(server.url).ok  # the printed URL works, then the cookie alone does
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.url == server.base + "/" and "token" not in page.url
    finally:
        context.close()
