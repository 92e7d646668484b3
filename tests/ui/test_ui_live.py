"""A running run, followed in Chromium: new events show up without a reload.

The run is a replay of the scripted run's real log, appended event by event through the store's
own EventLog while the page is open; its run_start names this test's process, so the run reads
as running until its run_end is appended."""

from __future__ import annotations

import pytest
import uiruns
from conftest import SHOTS, Server, wait_for

pytestmark = [pytest.mark.ui, pytest.mark.docker]


@pytest.fixture
def live(ui_runs, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    copy = uiruns.LiveCopy(ui_runs["scripted"], root, "20991231-000000-live")
    copy.until(lambda e: e["type"] == "round_start" and e["round"] == 1)
    server = Server(root, tmp_path / "cache")
    yield copy, server
    server.stop()


def _open(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    assert page.goto(server.url).ok
    return context, page


def test_run_page_follows_a_running_run(browser, live, shots_dir):
    copy, server = live
    context, page = _open(browser, server)
    try:
        page.goto(f"{server.base}/runs/{copy.dir.name}")
        assert page.inner_text("#run-status") == "running"
        assert page.inner_text("#run-phase").startswith("round 1: self-improvement")
        assert page.locator('tr.round-row.open[data-round="1"]').count() == 1
        page.evaluate("window.__samePage = 'yes'")  # gone if the page reloads

        copy.until(lambda e: "/eval/incumbent" in str(e.get("scope", "")))
        wait_for(lambda: "re-evaluating the incumbent" in page.inner_text("#run-phase"),
                 what="the phase to change")
        copy.until(lambda e: e["type"] == "round_end")
        wait_for(lambda: page.locator('tr.round-row[data-round="1"]:not(.open)').count() == 1,
                 what="round 1 to appear as finished")
        assert "adopted" in page.locator('tr.round-row[data-round="1"]').inner_text()
        assert page.locator("svg.chart circle.dot").count() == 4
        copy.until(lambda e: e["type"] == "round_start")
        wait_for(lambda: page.locator('tr.round-row.open[data-round="2"]').count() == 1,
                 what="round 2 to start")
        page.screenshot(path=str(shots_dir / "run-live.png"), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "run-live.png").write_bytes((shots_dir / "run-live.png").read_bytes())
        copy.rest()
        wait_for(lambda: page.inner_text("#run-status") == "finished", what="the run to finish")
        assert page.locator('tr.round-row[data-round="2"]:not(.open)').count() == 1
        assert page.inner_text("#run-rounds").startswith("2 of 2 finished")
        assert page.evaluate("window.__samePage") == "yes"
    finally:
        context.close()


def test_runs_page_updates_a_running_row(browser, live):
    copy, server = live
    context, page = _open(browser, server)
    try:
        page.goto(server.base + "/")
        row = page.locator(f'tr.run-row[data-run="{copy.dir.name}"]')
        assert row.get_attribute("data-status") == "running"
        page.evaluate("window.__samePage = 'yes'")
        copy.until(lambda e: e["type"] == "round_end")
        wait_for(lambda: row.locator("td").nth(5).inner_text().startswith("1"),
                 what="the rounds count to update")
        copy.rest()
        wait_for(lambda: row.get_attribute("data-status") == "finished", what="finished")
        assert page.evaluate("window.__samePage") == "yes"
    finally:
        context.close()
