"""A run whose candidates and model replies are hostile renders every string as text, and no
script of theirs runs: checked from inside the page, on every page that shows them."""

from __future__ import annotations

import pytest
import uiruns

from stop.reports import audit as A

pytestmark = [pytest.mark.ui, pytest.mark.docker]

# Everything the payloads would do if any of them ran or were clickable.
PROBE = """() => ({
  pwned: typeof window.__pwned,
  scripts: [...document.scripts].map(s => s.getAttribute("src")),
  handlers: [...document.querySelectorAll("*")].flatMap(el =>
      [...el.attributes].filter(a => a.name.startsWith("on")).map(a => el.tagName + " " + a.name)),
  jsLinks: [...document.querySelectorAll("[href],[src],[action]")].filter(el =>
      /^\\s*javascript:/i.test(el.getAttribute("href") || el.getAttribute("src") ||
                             el.getAttribute("action") || "")).length,
  injected: document.querySelectorAll("main img, main iframe, main object, main embed").length,
  controls: /[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]/
      .test(document.body.innerText),
  title: document.title,
})"""


def _pages(run) -> dict[str, str]:
    found = A.entries(A.run_findings(run))
    static = next(e for e in found if e.finding.layer == "static")
    cand = run.events("round_end")[0]["candidate_hash"]
    raising = next(e["candidate_hash"] for e in run.events("improver_test")
                   if "RuntimeError" in e["reason"])
    return {"runs": "/", "run": f"/runs/{run.id}", "round": f"/runs/{run.id}/rounds/1",
            "candidate": f"/runs/{run.id}/candidates/{cand}",
            "raising": f"/runs/{run.id}/candidates/{raising}",
            "audit": f"/audit?run={run.id}", "finding": f"/audit/{static.id}",
            "finding-all": f"/audit/{static.id}?context=all"}


def test_hostile_strings_are_text_and_never_run(page, server, ui_runs, shoot):
    run = ui_runs["scripted"]
    seen = ""
    for name, path in _pages(run).items():
        response = page.goto(server.base + path)
        assert response.ok, (name, response.status)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        page.mouse.move(200, 300)  # would fire a surviving onmouseover
        page.wait_for_timeout(100)
        got = page.evaluate(PROBE)
        assert got["pwned"] == "undefined", name
        assert got["scripts"] == ["/static/ui.js"], name
        assert got["handlers"] == [] and got["jsLinks"] == 0 and got["injected"] == 0, name
        assert not got["controls"] and "\x1b" not in got["title"], name
        assert page.dialogs == [], name
        text = page.inner_text("main")
        seen += text
        if name in ("round", "candidate", "finding-all"):
            shoot(f"hostile-{name}")
    # The payloads are on the pages, as text, with their control bytes made visible.
    assert "<script>window.__pwned = 1</script>" in seen
    assert '<img src=x onerror="window.__pwned=2">' in seen
    assert "javascript:window.__pwned=3" in seen and "javascript:window.__pwned=5" in seen
    assert "\\x1b]0;pwned-title\\x07\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in seen
    assert "\\u202e" in seen
    assert "raised RuntimeError: <script>" in seen  # the output of the raising improver
    page.goto(f"{server.base}/runs/{run.id}/rounds/1")
    page.locator("table.calls details summary").first.click()
    assert 'Here <b onclick="window.__pwned=6">is</b>' in page.inner_text("table.calls")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert uiruns.MARKUP in page.inner_text("main")
