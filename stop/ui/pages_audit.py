"""Pages about what the sandbox saw, and about the paper's experiments.

The audit pages call `stop audit`'s own functions (collect, find_entry, lineage,
candidate_source) with a store that hands out runs read once for the view, so the web view and
the CLI count, link and order findings the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stop.experiments import improve_summary as IS
from stop.experiments import transfer as T
from stop.experiments import unsandbox as X
from stop.reports import audit as A
from stop.runs.store import RunStore
from stop.sandbox.records import SEVERITIES
from stop.sandbox.rules import RULES
from stop.ui import code, svg
from stop.ui.loaded import LoadedRun
from stop.ui.site import BadRequest, Html, NotFound, Site

Params = dict[str, str]
MAX_ROWS = 500
CONTEXT_LINES = 8


class ViewStore:
    """The part of RunStore the audit functions use, over the view's runs."""

    def __init__(self, site: Site, with_findings_only: bool = True) -> None:
        self.site, self.root = site, site.runs_root
        self.with_findings_only = with_findings_only

    def list(self) -> list[LoadedRun]:
        self.site.index.refresh()
        rows = self.site.index.rows(sort="id", descending=False,
                                    where_extra="findings > 0" if self.with_findings_only else "")
        return [self.site.load(r["id"]) for r in rows if r["status"] != "damaged"]

    def open(self, ref: str) -> LoadedRun:
        return self.site.load(ref)


def _query(query: Params) -> A.FindingQuery:
    try:
        return A.FindingQuery(min_severity=query.get("severity") or None,
                              rules=(query["rule"],) if query.get("rule") else (),
                              role=query.get("role") or None)
    except A.AuditError as e:
        raise BadRequest(str(e)) from None


def audit_page(site: Site, path: Params, query: Params) -> Html:
    q = _query(query)
    run_ref = query.get("run") or None
    store = ViewStore(site)
    _, found = A.collect(store, run_ref, all_runs=run_ref is None, query=q)
    counted = [e for e in found if e.counted]
    site.index.refresh()
    return site.render(
        "audit.html", found=found[:MAX_ROWS], total=len(found), counted=len(counted),
        by_severity=Counter(e.finding.severity for e in counted),
        by_rule=Counter(e.finding.rule for e in counted).most_common(),
        severities=SEVERITIES, rules=sorted(RULES), runs=[r["id"] for r in site.index.rows(
            sort="id", where_extra="findings > 0")],
        query={k: v for k, v in query.items() if v}, max_rows=MAX_ROWS)


def finding_page(site: Site, path: Params, query: Params) -> Html:
    store = ViewStore(site)
    try:
        entry = A.find_entry(store, path["id"], path.get("run"))
    except A.AuditError as e:
        raise NotFound(str(e)) from None
    f = entry.finding
    run = site.load(f.run_id) if f.run_id else None
    source = A.candidate_source(run, f.candidate_hash) if run else None
    lines = code.highlight_lines(source[0]) if source else []
    whole = query.get("context") == "all"
    window = code.context_window(len(lines), f.line, None if whole else CONTEXT_LINES)
    linked = []
    chain: list[dict[str, Any]] = []
    execs: list[dict[str, Any]] = []
    if run is not None:
        all_entries = A.entries(A.run_findings(run))
        by_id = {e.id: e for e in all_entries}
        linked = [by_id[i] for i in entry.linked if i in by_id]
        flagged = {e.finding.candidate_hash for e in all_entries if e.finding.candidate_hash}
        chain = A.lineage(run, flagged)
        execs = [e for e in run.events("sandbox_exec")
                 if e.get("candidate_hash") == f.candidate_hash and e.get("round") == f.round]
    descendants = [n for n in chain if f.candidate_hash and (
        n["hash"] == f.candidate_hash or f.candidate_hash in n["flagged_ancestors"])]
    rule = RULES.get(f.rule)
    return site.render(
        "finding.html", e=entry, f=f, run=run, rule=rule, source=source, lines=lines,
        window=window, whole=whole, linked=linked, chain=chain, descendants=descendants,
        execs=execs[:20], execs_total=len(execs))


def experiments_page(site: Site, path: Params, query: Params) -> Html:
    site.index.refresh()
    unsandbox, transfers, problems = [], [], []
    for row in site.index.rows(kind="unsandbox", sort="started"):
        try:
            s = X.summarize(site.load(row["id"]))
        except Exception as e:  # noqa: BLE001 - one broken experiment must not hide the rest
            problems.append((row["id"], f"{type(e).__name__}: {e}"))
            continue
        bars = [{"label": f"{s['run']} ({s['model']})", "ours": True, "rate": s["flag_off"]["rate"],
                 "lo": s["flag_off"]["ci95"][0], "hi": s["flag_off"]["ci95"][1]}]
        bars += [{"label": f"paper: {m}", "rate": p["rate"], "lo": p["lo"], "hi": p["hi"]}
                 for m, p in s["published"].items()]
        unsandbox.append({"s": s, "chart": svg.rate_chart(bars)})
    for row in site.index.rows(where_extra="transfer = 1", sort="started"):
        try:
            table = T.load_table(site.load(row["id"]))
        except Exception as e:  # noqa: BLE001
            problems.append((row["id"], f"{type(e).__name__}: {e}"))
            continue
        if table:
            transfers.append({"run": row["id"], "table": table, "rows": [
                {"task": r["task"], "cells": [T._pct(r.get(a)) for a in T.ARMS],
                 "paper": " / ".join(T._pub((r.get("published") or {}).get(a)) for a in T.ARMS)
                 if r.get("published") else "–",
                 "note": (r.get("published") or {}).get("note", ""),
                 "fallbacks": sum((r.get(a) or {}).get("fallbacks", 0) for a in T.ARMS)}
                for r in table["rows"]]})
    improve = []
    for row in site.index.rows(kind="improve", sort="started"):
        try:
            d = IS.summarize(site.load(row["id"]), RunStore(site.runs_root))
        except Exception as e:  # noqa: BLE001
            problems.append((row["id"], f"{type(e).__name__}: {e}"))
            continue
        improve.append({"d": d, "runs": [
            {"run": r["run"], "rounds": r["rounds"], "adopted": r["adopted"],
             "cells": [IS._pct(r["arms"].get(a)) for a in IS.ARMS],
             "diffs": [IS._pts(r["diff"].get(name)) for name, _, _ in IS.DIFFS]}
            for r in d["per_run"]],
            "across": [(name, d["across"][name]) for name, _, _ in IS.DIFFS]})
    return site.render("experiments.html", unsandbox=unsandbox, transfers=transfers,
                       improve=improve, problems=problems, arms=[T.ARM_LABELS[a] for a in T.ARMS],
                       improve_arms=[IS.ARM_LABELS[a] for a in IS.ARMS],
                       improve_diffs=[name for name, _, _ in IS.DIFFS])
