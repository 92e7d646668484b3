"""The improve experiment's report: the arms of every run, the paired differences, the
strategies the runs proposed, model use; two PNG figures, written next to the page and embedded.

Everything shown comes from `stop.experiments.improve_summary.summarize`; proposal sources and
model-written labels are hostile text and are escaped wherever they appear.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from stop.experiments.improve_summary import DIFFS, format_text
from stop.reports.plots import _empty, _pyplot, _save
from stop.reports.report import CSS, _img, _table

ARM_COLOURS = {"I0": "#f6ae2d", "baseline": "#9aa5b1", "IT": "#33658a"}


def _bar_err(cell: dict[str, Any]) -> tuple[float, float]:
    if cell.get("lo") is None or cell.get("hi") is None:
        return 0.0, 0.0
    return max(0.0, 100 * (cell["mean"] - cell["lo"])), max(0.0, 100 * (cell["hi"] - cell["mean"]))


def plot_arms(summary: dict[str, Any], path: Path) -> Path:
    """Per run: I_0, the baseline and I_T, test score with 95% t intervals."""
    plt = _pyplot()
    runs = summary["per_run"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(runs) + 3), 4.2))
    width = 0.26
    for i, arm in enumerate(("I0", "baseline", "IT")):
        xs, ms, errs = [], [], []
        for j, r in enumerate(runs):
            cell = r["arms"].get(arm)
            if cell:
                xs.append(j + (i - 1) * width)
                ms.append(100 * cell["mean"])
                errs.append(_bar_err(cell))
        if xs:
            ax.bar(xs, ms, width, yerr=list(zip(*errs, strict=True)), capsize=3,
                   color=ARM_COLOURS[arm], label=summary["arm_labels"][arm], edgecolor="white")
    if str(summary.get("task")) == "parity_noise":
        for ref, style in zip(summary["published"]["lpn_reference"], ("--", ":"), strict=True):
            ax.axhline(ref["mean"], color="black", lw=1, ls=style,
                       label=f"paper: {ref['method']} {ref['mean']}%")
    if not runs:
        _empty(ax, "no runs yet")
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([f"run {r['index']}" for r in runs])
    ax.set_ylabel("test score (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{summary['task']}: each run's arms ({summary['trials']} trials each, 95% t interval)")
    return _save(fig, path)


def plot_strategies(table: dict[str, Any], path: Path) -> Path:
    """Share of proposals per family (and finding rule), all and adopted, 95% Wilson intervals."""
    plt = _pyplot()
    rows = [r for r in table["rows"] if r["kind"] == "family" or r["all"]["k"]]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.6))
    ys = list(range(len(rows)))[::-1]
    for dy, key, colour, label in ((0.2, "all", "#33658a", f"all proposals (n={table['n']})"),
                                   (-0.2, "adopted", "#2a9d4b",
                                    f"adopted (n={table['n_adopted']})")):
        vals, errs = [], []
        for r in rows:
            c = r[key]
            if c["n"]:
                lo, hi = c["ci95"]
                vals.append(100 * c["rate"])
                errs.append((max(0.0, 100 * (c["rate"] - lo)), max(0.0, 100 * (hi - c["rate"]))))
            else:
                vals.append(0.0)
                errs.append((0.0, 0.0))
        ax.barh([y + dy for y in ys], vals, 0.38, xerr=list(zip(*errs, strict=True)), capsize=2,
                color=colour, label=label)
    if table["n_judged"]:
        pts = [(100 * r["judge"]["rate"], y) for r, y in zip(rows, ys, strict=True)
               if r.get("judge") and r["judge"]["n"]]
        ax.scatter([p for p, _ in pts], [y for _, y in pts], marker="D", color="black", zorder=5,
                   label=f"judge's labels (n={table['n_judged']})")
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("share of proposed improvers (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Strategies in the proposed improvers (tags read from the code)")
    if not table["n"]:
        _empty(ax, "no proposals yet")
    return _save(fig, path)


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "–"
    m = f"{100 * c['mean']:.1f}"
    return m + (f" (n={c['n']})" if c["lo"] is None
                else f" [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]")


def _pts(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _rate(r: dict[str, Any] | None) -> str:
    if not r or not r["n"]:
        return "–"
    lo, hi = r["ci95"]
    return f"{r['k']}/{r['n']} ({100 * lo:.0f}–{100 * hi:.0f}%)"


def build_improve_report(exp_id: str, summary: dict[str, Any], out: Path) -> tuple[Path, dict[str, Path]]:
    """Write out/index.html and its two figures; returns the page and the figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = {"arms": plot_arms(summary, out / "improve_arms.png"),
            "strategies": plot_strategies(summary["strategies"], out / "strategies.png")}
    s = summary
    parts = [f"<h1>Does it improve? Experiment {_e(exp_id)}</h1>",
             f"<p>Task <b>{_e(s['task'])}</b>, model <b>{_e(s['model'])}</b>, profile "
             f"{_e(s['profile'])}, {len(s['per_run'])} of {_e(s['runs_planned'])} run(s), "
             f"{_e(s['trials'])} trial(s) per arm on the test split; status {_e(s['status'])}.</p>",
             "<h2>Arms per run</h2>", _img(figs["arms"], "arms per run")]
    rows = [[_e(r["run"]), str(r["rounds"]), str(r["adopted"]),
             *(_cell(r["arms"].get(a)) for a in ("I0", "baseline", "IT")),
             *(_pts(r["diff"].get(n)) for n, _, _ in DIFFS)] for r in s["per_run"]]
    parts.append(_table(["run", "rounds", "adopted", "I_0", "baseline", "I_T", "I_T − I_0",
                         "I_T − baseline", "baseline − I_0"], rows, {3, 4, 5, 6, 7, 8}))
    parts.append("<h2>Across runs</h2>")
    arows = []
    for name, _, _ in DIFFS:
        p = s["across"][name]
        ci = "–" if p["lo"] is None else f"[{_pts(p['lo'])}, {_pts(p['hi'])}]"
        arows.append([_e(name), _pts(p["mean"]), ci, str(p["n"]),
                      "–" if p["p"] is None else f"{p['p']:.3g}",
                      "yes" if p["significant"] else "no"])
    parts.append(_table(["difference (points)", "mean", "95% t interval", "runs", "paired t p",
                         "significant"], arows, {1, 2, 3, 4}))
    imp, pub = s["improved"], s["published"]
    if imp["n"]:
        parts.append(f"<p>Runs improved by at least {100 * imp['by']:.0f} points: "
                     f"{imp['k']} of {imp['n']} (95% Wilson {100 * imp['ci95'][0]:.0f}–"
                     f"{100 * imp['ci95'][1]:.0f}%).</p>")
    g = pub["gpt35_improved"]
    parts.append(f"<p class='muted'>The paper's numbers (theirs, not ours): {_e(g['what'])}: "
                 f"{g['k']} of {g['n']}; {_e(pub['gpt4_protocol'])}; "
                 + "; ".join(f"{_e(r['method'])} {r['mean']}% ± {r['pm']}"
                             for r in pub["lpn_reference"]) + " on LPN.</p>")
    parts.append("<h2>Model use</h2>")
    parts.append(_table(["what", "fresh calls", "served from log or cache", "tokens", "cost"],
                        [[_e(k), str(u["calls"]), str(u["served"]), f"{u['tokens']:,}",
                          "unknown" if u["cost_usd"] is None else f"${u['cost_usd']:.4f}"]
                         for k, u in s["usage"].items()], {1, 2, 3, 4}))
    st = s["strategies"]
    parts += ["<h2>Strategies</h2>", _img(figs["strategies"], "strategies"),
              f"<p>{st['n']} proposed improver(s), {st['n_adopted']} adopted, "
              f"{st['n_unparsed']} not an improver (not valid Python, or no improve_algorithm); count / n with a 95% Wilson interval.</p>",
              _table(["family or finding", "all", "adopted", "judge"],
                     [[_e(r["label"]), _rate(r["all"]), _rate(r["adopted"]), _rate(r["judge"])]
                      for r in st["rows"]], {1, 2, 3})]
    prow = [[_e(p["run"]), str(p["round"]), f"<code>{_e(p['hash'][:12])}</code>",
             "yes" if p["adopted"] else "", _e(", ".join(p["tags"]) or "none"),
             "<br>".join(f"{_e(f)}: " + "; ".join(f"{n}: <code>{_e(t)}</code>" for n, t in lines)
                         for f, lines in p["evidence"].items()),
             _e(", ".join(p["rules"])), _e("–" if p["judge"] is None else ", ".join(p["judge"]))]
            for p in s["proposals"]]
    parts.append("<details><summary>Every proposal with its lines</summary>"
                 + _table(["run", "round", "improver", "adopted", "tags", "lines", "findings",
                           "judge"], prow) + "</details>")
    parts.append(f"<details><summary>as text</summary><pre>{_e(format_text(s))}</pre></details>")
    parts.append(f"<details><summary>JSON</summary><pre>{_e(json.dumps(s, indent=1, default=str)[:200000])}"
                 f"</pre></details>")
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>stop improve {_e(exp_id)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path, figs
