"""A run's report: one HTML page with PNG figures, built from the run's files only.

The page holds the meta-utility per round (val and test, incumbent and candidate, 95% Student t
intervals from the per-test scores in `round_end`), the adoption decisions, model use per round,
the diffs between adopted improvers, the audit findings, and the transfer table when one exists.
Figures are written next to the page and also embedded in it, so `index.html` alone is enough
to share the report.
"""

from __future__ import annotations

import base64
import difflib
import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from stop.core.stats import improvement_test, mean_ci
from stop.experiments.transfer import ARMS, format_table, load_table
from stop.models.base import format_cost, total_cost
from stop.reports import plots
from stop.runs.store import Run
from stop.sandbox.records import SEVERITIES, severity_rank

WHO = ("incumbent", "candidate")
MAX_FINDING_ROWS = 200
SPLITS = ("val", "test")


def _point(block: dict[str, Any] | None, split: str) -> dict[str, Any] | None:
    """Mean and 95% t interval of one split of one improver in a round_end record."""
    if not block:
        return None
    scores = block.get(f"{split}_scores")
    if scores:
        m, lo, hi = mean_ci(scores)
        return {"mean": m, "lo": lo, "hi": hi, "n": len(scores)}
    mean = block.get(split)
    if mean is None:
        return None
    return {"mean": float(mean), "lo": math.nan, "hi": math.nan, "n": None}


def _welch_view(e: dict[str, Any], margin: float, alpha: float | None) -> dict[str, Any] | None:
    """The val difference (candidate - incumbent) with its Welch interval and one-sided p."""
    inc = (e.get("incumbent") or {}).get("val_scores")
    cand = (e.get("candidate") or {}).get("val_scores")
    if not inc or not cand:
        return None
    c = improvement_test(inc, cand, margin, alpha=alpha)
    return {"diff": c.diff, "lo": c.diff_ci[0], "hi": c.diff_ci[1], "p": c.p_value}


def round_series(run: Run) -> list[dict[str, Any]]:
    """One entry per finished round (the last record of a round wins if it was repeated)."""
    config = run.config()
    margin = float(config.get("margin") or 0.0)
    alpha = config.get("alpha", 0.05)
    by_round: dict[int, dict[str, Any]] = {}
    for e in run.events("round_end"):
        by_round[int(e["round"])] = e
    series = []
    for r in sorted(by_round):
        e = by_round[r]
        series.append({
            "round": r, "adopted": bool(e.get("adopted")), "reason": e.get("reason", ""),
            "incumbent_hash": e.get("incumbent_hash"), "candidate_hash": e.get("candidate_hash"),
            **{who: {s: _point(e.get(who), s) for s in SPLITS} for who in WHO},
            "model_calls": e.get("model_calls"), "tokens": e.get("tokens"),
            "cost_usd": e.get("cost_usd"), "wall_s": e.get("wall_s"), "findings": e.get("findings"),
            "welch": _welch_view(e, margin, alpha),
        })
    return series


def model_use(run: Run, series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Model calls, tokens and cost per round: from round_end, else summed from model_call events."""
    calls: dict[int, list[dict[str, Any]]] = {}
    for e in run.events("model_call"):
        if e.get("round") is not None and e.get("phase") != "transfer":
            calls.setdefault(int(e["round"]), []).append(e)
    rows = []
    rounds = sorted({r["round"] for r in series} | set(calls))
    ends = {r["round"]: r for r in series}
    for r in rounds:
        evs = calls.get(r, [])
        end = ends.get(r, {})
        summed_tokens = sum(int(e.get("prompt_tokens", 0)) + int(e.get("completion_tokens", 0))
                            for e in evs)
        rows.append({
            "round": r,
            "model_calls": end.get("model_calls") if end.get("model_calls") is not None else len(evs),
            "tokens": end.get("tokens") if end.get("tokens") is not None else summed_tokens,
            "cost_usd": (end.get("cost_usd") if end.get("cost_usd") is not None
                         else total_cost(evs)),
            "cached": (end.get("cached_calls") if end.get("cached_calls") is not None
                       else sum(1 for e in evs if e.get("cached"))),
        })
    return rows


def improver_diffs(run: Run, series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unified diffs of the improver between consecutive adopted rounds (round 0 is the seed)."""
    adopted = [0] + [r["round"] for r in series if r["adopted"]]
    out = []
    for a, b in zip(adopted, adopted[1:], strict=False):
        try:
            old, new = run.read_improver(a), run.read_improver(b)
        except Exception:  # noqa: BLE001 - a missing file is shown as missing, not fatal
            out.append({"from": a, "to": b, "diff": None})
            continue
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), f"round_{a:03d}.py",
                                    f"round_{b:03d}.py", lineterm="")
        out.append({"from": a, "to": b, "diff": "\n".join(diff)})
    return out


def findings_by_round(findings: list[Any]) -> dict[int | None, dict[str, int]]:
    counts: dict[int | None, Counter] = {}
    for f in findings:
        counts.setdefault(f.round, Counter())[f.severity] += 1
    return {r: dict(c) for r, c in counts.items()}


def build_report(run: Run, out: Path) -> Path:
    """Write out/index.html and its figures; returns the page's path."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    series = round_series(run)
    usage = model_use(run, series)
    findings = sorted(run.findings(), key=lambda f: (-severity_rank(f.severity)
                                                     if f.severity in SEVERITIES else 0,
                                                     f.round if f.round is not None else -1))
    table = load_table(run)
    figs = {
        "meta_utility": plots.plot_meta_utility(series, out / "meta_utility.png",
                                                f"Meta-utility per round, run {run.id}"),
        "model_use": plots.plot_costs(usage, out / "model_use.png"),
        "findings": plots.plot_findings(findings_by_round(findings), out / "findings.png",
                                       [r["round"] for r in series]),
    }
    if table:
        label = table.get("improver_label", "improver")
        figs["transfer"] = plots.plot_transfer(table["rows"], out / "transfer.png", label)
    page = _render(run, series, usage, improver_diffs(run, series), findings, table, figs)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f6f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}pre{background:#f8f8f8;padding:.8em;overflow-x:auto;
font-size:.85em}.add{color:#1a7f37}.del{color:#b3261e}.hunk{color:#6a4c93}
.yes{color:#1a7f37;font-weight:600}.no{color:#b3261e}.sev-critical{color:#9e0031;font-weight:700}
.sev-high{color:#c4441d;font-weight:600}.muted{color:#777}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(p: dict[str, Any] | None, pct: bool = False) -> str:
    if not p:
        return "–"
    k = 100.0 if pct else 1.0
    d = 1 if pct else 3
    m = f"{k * p['mean']:.{d}f}"
    if p.get("lo") is None or math.isnan(p["lo"]):
        return m + (f" (n={p['n']})" if p.get("n") else "")
    return f"{m} [{k * p['lo']:.{d}f}, {k * p['hi']:.{d}f}]"


def _welch_cell(w: dict[str, Any] | None) -> str:
    if not w:
        return "–"
    text = f"{w['diff']:+.3f}"
    if not math.isnan(w["lo"]):
        text += f" [{w['lo']:+.3f}, {w['hi']:+.3f}]"
    if not math.isnan(w["p"]):
        text += f", p={w['p']:.3g}"
    return text


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<p><img src="data:image/png;base64,{data}" alt="{_e(alt)}" title="{_e(path.name)}"></p>'


def _table(heads: list[str], rows: list[list[str]], num: set[int] | None = None) -> str:
    num = num or set()
    h = "".join(f"<th>{x}</th>" for x in heads)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _diff_html(diff: str) -> str:
    lines = []
    for ln in diff.splitlines():
        cls = ("add" if ln.startswith("+") and not ln.startswith("+++") else
               "del" if ln.startswith("-") and not ln.startswith("---") else
               "hunk" if ln.startswith("@@") else "")
        lines.append(f'<span class="{cls}">{_e(ln)}</span>' if cls else _e(ln))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _render(run: Run, series: list[dict[str, Any]], usage: list[dict[str, Any]],
            diffs: list[dict[str, Any]], findings: list[Any], table: dict[str, Any] | None,
            figs: dict[str, Path]) -> str:
    config = run.config()
    ends = run.events("run_end")
    status = ends[-1].get("status", "?") if ends else "unfinished (no run_end yet)"
    parts = [f"<h1>stop report: run {_e(run.id)}</h1>",
             f"<p>Status: <b>{_e(status)}</b>. Rounds finished: {len(series)}. "
             f"Adopted: {sum(1 for r in series if r['adopted'])}. "
             f"Audit findings: {len(findings)}.</p>"]
    keys = ("task", "model", "profile", "rounds", "n_tests", "lm_budget", "max_responses_per_call",
            "utility_budget", "margin", "alpha", "sandbox", "seed_improver")
    shown = [[_e(k), _e(json.dumps(config[k]))] for k in keys if k in config]
    parts.append("<details><summary>Configuration</summary>" + _table(["setting", "value"], shown)
                 + f"<pre>{_e(json.dumps(config, indent=2))}</pre></details>")

    parts.append("<h2>Meta-utility per round</h2>")
    parts.append("<p>Each point is the mean over the meta-utility's improver runs; bars are 95% "
                 "Student t intervals from the per-run scores. The incumbent is the improver "
                 "going into the round; the candidate is what it wrote for itself. A candidate "
                 "is adopted when its val mean beats the incumbent's by more than the margin and "
                 "a one-sided Welch t-test agrees (Δ val: candidate minus incumbent, with its "
                 "Welch interval and p-value).</p>")
    parts.append(_img(figs["meta_utility"], "meta-utility per round"))
    rows = [[str(r["round"]), _fmt(r["incumbent"]["val"]), _fmt(r["candidate"]["val"]),
             _fmt(r["incumbent"]["test"]), _fmt(r["candidate"]["test"]), _welch_cell(r["welch"]),
             '<span class="yes">adopted</span>' if r["adopted"] else '<span class="no">rejected</span>',
             _e(r["reason"])] for r in series]
    parts.append(_table(["round", "incumbent val", "candidate val", "incumbent test",
                         "candidate test", "Δ val [Welch 95%], p", "decision", "reason"], rows,
                        {1, 2, 3, 4, 5})
                 if rows else "<p class='muted'>No round has finished yet.</p>")

    parts.append("<h2>Language-model use</h2>")
    parts.append(_img(figs["model_use"], "model calls, tokens and cost per round"))
    urows = [[str(u["round"]), f"{u['model_calls']:,}", f"{u['tokens']:,}", format_cost(u["cost_usd"], dollar=False),
              str(u["cached"])] for u in usage]
    if urows:
        urows.append(["total", f"{sum(u['model_calls'] for u in usage):,}",
                      f"{sum(u['tokens'] for u in usage):,}",
                      format_cost(total_cost(usage), dollar=False),
                      str(sum(u['cached'] for u in usage))])
    parts.append(_table(["round", "model calls", "tokens", "cost (USD)", "served from cache"],
                        urows, {1, 2, 3, 4}))

    parts.append("<h2>Improver changes between adopted rounds</h2>")
    if not diffs:
        parts.append("<p class='muted'>No candidate was adopted; the improver is the seed.</p>")
    for d in diffs:
        parts.append(f"<h3>round {d['from']} → round {d['to']}</h3>")
        parts.append(_diff_html(d["diff"]) if d["diff"] is not None
                     else "<p class='muted'>improver file missing</p>")
    final = series[-1]["round"] if series else 0
    if run.improver_path(final).exists():
        parts.append(f"<details><summary>The improver after round {final} (full source)"
                     f"</summary><pre>{_e(run.read_improver(final))}</pre></details>")

    parts.append("<h2>Audit findings</h2>")
    parts.append(_img(figs["findings"], "audit findings per round by severity"))
    by_sev = Counter(f.severity for f in findings)
    parts.append("<p>" + ", ".join(f"{by_sev[s]} {s}" for s in reversed(SEVERITIES) if by_sev[s])
                 + "</p>" if findings else "<p>No findings.</p>")
    frows = [[f'<span class="sev-{_e(f.severity)}">{_e(f.severity)}</span>', _e(f.rule),
              _e(f.round), _e(f.role), _e(f.layer), _e(f.attempted), _e(f.action),
              f"<code>{_e(f.source_line)}</code>" + (f" (line {f.line})" if f.line else ""),
              _e(f.candidate_hash)] for f in findings[:MAX_FINDING_ROWS]]
    if frows:
        parts.append(_table(["severity", "rule", "round", "role", "layer", "attempted", "action",
                             "source", "candidate"], frows))
    if len(findings) > MAX_FINDING_ROWS:
        parts.append(f"<p class='muted'>{len(findings) - MAX_FINDING_ROWS} less severe findings "
                     f"not shown; <code>stop audit {_e(run.id)}</code> lists them all.</p>")

    parts.append("<h2>Transfer</h2>")
    if table:
        parts.append(_img(figs["transfer"], "transfer test scores"))
        parts.append(_transfer_html(table))
        tcalls = [e for e in run.events("model_call") if e.get("phase") == "transfer"]
        fresh = [e for e in tcalls if not e.get("cached")]
        parts.append(f"<p>Transfer model use: {len(fresh)} calls "
                     f"({len(tcalls) - len(fresh)} more served from cache or log), "
                     f"{sum(int(e.get('prompt_tokens', 0)) + int(e.get('completion_tokens', 0)) for e in fresh):,}"
                     f" tokens, cost {format_cost(total_cost(fresh))}.</p>")
    else:
        parts.append("<p class='muted'>No transfer evaluation yet: <code>stop transfer "
                     f"{_e(run.id)}</code> makes one.</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>stop report {_e(run.id)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _transfer_html(table: dict[str, Any]) -> str:
    label = table.get("improver_label", "improver")
    rows = []
    for row in table["rows"]:
        pub = row.get("published") or {}
        rows.append([_e(row["task"]), *(_fmt(row.get(a), pct=True) for a in ARMS),
                     " / ".join("–" if pub.get(a) is None else f"{pub[a]:.1f}" for a in ARMS)
                     if pub else "–", _e(pub.get("note", ""))])
    heads = ["task", "seed solution", "seed improver", _e(label), "paper: seed / I0 / IT", "note"]
    text = (f"<p>Test split, percent, mean [95% Student t interval] over {table.get('trials')} "
            f"trial(s) per cell; model {_e(table.get('model'))}.</p>")
    return text + _table(heads, rows, {1, 2, 3}) + f"<details><summary>as text</summary><pre>" \
        f"{_e(format_table(table))}</pre></details>"


def compare_runs(runs: list[Run], out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """One figure with the meta-utility curves of several runs; returns it and a summary per run."""

    data, summary = [], []
    for run in runs:
        series = round_series(run)
        model = run.config().get("model") or "embedded"
        data.append((f"{run.id} ({model})", series))
        last = series[-1] if series else None
        final = None
        if last:
            block = "candidate" if last["adopted"] else "incumbent"
            final = {s: last[block][s] for s in SPLITS}
        summary.append({"run": run.id, "model": model, "rounds": len(series),
                        "adopted": sum(1 for r in series if r["adopted"]), "final": final,
                        "first": {s: series[0]["incumbent"][s] for s in SPLITS} if series else None})
    return plots.plot_compare(data, out), summary
