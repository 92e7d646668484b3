"""Pages about runs: the list, one run (live while it goes), one round, one candidate.

Each page function takes the site, the URL's path parameters and its query, and returns the
rendered page. The numbers come from stop's own functions (the run summary of `stop show`, the
round series and model use of `stop report`, the audit's entries and candidate sources), fed
a run whose log was read once for the view.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stop.reports import audit as A
from stop.reports.report import model_use
from stop.runs.summary import summarize
from stop.ui import code, live, svg
from stop.ui.index import SORTABLE
from stop.ui.loaded import LoadedRun
from stop.ui.site import HASH, BadRequest, Html, NotFound, Site

Params = dict[str, str]
MAX_REPLY_CHARS = 20_000
MAX_CALLS_SHOWN = 200
PER_PAGE, MAX_PER_PAGE = 100, 1000  # runs in one page of the list


# ---------------------------------------------------------------- the runs list


def _filters(site: Site, query: Params) -> dict[str, Any]:
    sort = query.get("sort") or "started"
    if sort not in SORTABLE:
        raise BadRequest(f"cannot sort by {sort!r}; choose one of {', '.join(SORTABLE)}")
    return {"task": query.get("task") or None, "model": query.get("model") or None,
            "status": query.get("status") or None, "sort": sort,
            "descending": query.get("order", "desc") != "asc"}


def _whole(query: Params, key: str, default: int, most: int | None = None) -> int:
    raw = query.get(key) or str(default)
    if not raw.isdigit() or int(raw) < 1 or (most is not None and int(raw) > most):
        limit = f"from 1 to {most}" if most is not None else "1 or more"
        raise BadRequest(f"{key} must be a whole number {limit}, not {raw[:40]!r}")
    return int(raw)


def _runs_context(site: Site, query: Params) -> dict[str, Any]:
    f = _filters(site, query)
    per, page = _whole(query, "per", PER_PAGE, MAX_PER_PAGE), _whole(query, "page", 1)
    site.index.refresh()
    rows = site.index.rows(**f)
    pages = max(1, -(-len(rows) // per))
    page = min(page, pages)  # a page past the end (runs were deleted) shows the last one
    first = (page - 1) * per
    return {"rows": rows[first:first + per], "f": f,
            "query": {k: v for k, v in query.items() if v and k != "page"},
            "running": sum(1 for r in rows if r["status"] == "running"),
            "choices": {c: site.index.choices(c) for c in ("task", "model", "status")},
            "total": len(rows), "page": page, "pages": pages, "first": first + 1,
            "last": min(first + per, len(rows))}


def runs_page(site: Site, path: Params, query: Params) -> Html:
    return site.render("runs.html", **_runs_context(site, query), notes=site.notes)


def runs_table(site: Site, path: Params, query: Params) -> Html:
    return site.render("_runs_table.html", **_runs_context(site, query))


# ---------------------------------------------------------------- one run


def _run_context(site: Site, run: LoadedRun) -> dict[str, Any]:
    summary = summarize(run)
    events = run.loaded
    series = site.series(run)
    usage = {u["round"]: u for u in model_use(run, series)}
    t = live.open_round(events)
    started = {e.get("round"): e for e in events if e.get("type") == "round_start"}
    return {
        "run": run, "s": summary, "series": series, "usage": usage,
        "phase": live.current_phase(events, summary["status"]), "open_round": t,
        "open_started": started.get(t), "final": summary["status"] in live.FINAL,
        "curve": svg.meta_utility_curve(series), "events": len(events),
        "adopted": sum(1 for r in series if r["adopted"]),
    }


def run_page(site: Site, path: Params, query: Params) -> Html:
    run = site.load(path["run"])
    config = run.config()
    shown = ("task", "model", "profile", "rounds", "n_tests", "lm_budget",
             "max_responses_per_call", "utility_budget", "meta_lm_budget",
             "meta_utility_budget", "margin", "alpha", "sandbox", "seed_improver", "experiment")
    return site.render("run.html", **_run_context(site, run), config=config,
                       settings=[(k, config[k]) for k in shown if k in config])


def run_live(site: Site, path: Params, query: Params) -> Html:
    return site.render("_run_live.html", **_run_context(site, site.load(path["run"])))


# ---------------------------------------------------------------- one round


def _source(run: LoadedRun, h: str | None, improver_round: int | None = None) -> dict[str, Any]:
    """{"text", "where"} of a candidate hash; the improver file of a round as a fallback."""
    if h:
        found = A.candidate_source(run, h)
        if found is not None:
            return {"text": found[0], "where": found[1], "hash": h}
    if improver_round is not None and run.improver_path(improver_round).exists():
        p = run.improver_path(improver_round)
        return {"text": p.read_text(encoding="utf-8", errors="replace"),
                "where": str(p.relative_to(run.dir)), "hash": h}
    return {"text": None, "where": "not kept by this run", "hash": h}


def _scored(events: list[dict[str, Any]], t: int) -> list[dict[str, Any]]:
    """Candidates the round's self-improvement step scored with the meta-utility."""
    tests = [e for e in events if e.get("type") == "improver_test" and e.get("round") == t]
    out = []
    for e in events:
        if e.get("type") != "utility_call" or e.get("round") != t or e.get("utility") != "meta":
            continue
        h, occ = str(e.get("solution_hash") or ""), e.get("occurrence", 0)
        prefix = f"{e.get('scope')}/u{h[:10]}.{occ}/"
        out.append({"hash": h, "val": e.get("value"), "test": e.get("test"),
                    "occurrence": occ,
                    "runs": [x for x in tests if str(x.get("scope", "")).startswith(prefix)]})
    return out


def round_page(site: Site, path: Params, query: Params) -> Html:
    run = site.load(path["run"])
    try:
        t = int(path["round"])
    except ValueError:
        raise NotFound("a round is a number") from None
    events = run.loaded
    mine = [e for e in events if e.get("round") == t]
    if not mine:
        raise NotFound(f"run {run.id} has no round {t}")
    row = next((r for r in site.series(run) if r["round"] == t), None)
    start = next((e for e in mine if e.get("type") == "round_start"), {})
    inc_hash = (row or {}).get("incumbent_hash") or start.get("incumbent_hash")
    incumbent = _source(run, inc_hash, t - 1)
    candidate = _source(run, (row or {}).get("candidate_hash"))
    diff = (code.diff_rows(incumbent["text"], candidate["text"])
            if incumbent["text"] is not None and candidate["text"] is not None else None)
    calls = [e for e in mine if e.get("type") == "model_call"]
    findings = [e for e in A.entries(A.run_findings(run)) if e.finding.round == t]
    return site.render(
        "round.html", run=run, t=t, row=row, incumbent=incumbent, candidate=candidate,
        diff=diff, candidate_lines=code.highlight_lines(candidate["text"] or ""),
        incumbent_lines=code.highlight_lines(incumbent["text"] or ""),
        scored=_scored(events, t),
        evaluations=[e for e in mine if e.get("type") == "evaluation"],
        calls=calls[:MAX_CALLS_SHOWN], calls_total=len(calls),
        reply_cap=MAX_REPLY_CHARS, findings=findings,
        in_progress=row is None, phase=live.current_phase(events, summarize(run)["status"]),
        counts=Counter(e.get("type") for e in mine))


def candidate_page(site: Site, path: Params, query: Params) -> Html:
    run = site.load(path["run"])
    h = path["hash"]
    if not HASH.fullmatch(h):
        raise NotFound("a candidate is named by its hex hash")
    src = _source(run, h)
    if src["text"] is None:
        raise NotFound(f"run {run.id} kept no source for candidate {h}")
    against = query.get("against") or ""
    base = _source(run, against) if against and HASH.fullmatch(against) else None
    findings = [e for e in A.entries(A.run_findings(run)) if e.finding.candidate_hash == h]
    marked = {e.finding.line for e in findings if e.finding.line}
    return site.render(
        "candidate.html", run=run, h=h, src=src, lines=code.highlight_lines(src["text"]),
        marked=marked, findings=findings, base=base,
        diff=code.diff_rows(base["text"], src["text"]) if base and base["text"] is not None
        else None)
