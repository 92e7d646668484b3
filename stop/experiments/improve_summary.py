"""The improve experiment's result, read back from its logs: arms per run, paired differences
across runs, how many runs improved by 3 points, what each arm spent, and the strategies.

Methods:
- per run and arm: the mean test score of the trials with a two-sided 95% Student t interval;
- across runs: for each run the difference of arm means (I_T - I_0, I_T - baseline, baseline -
  I_0); their mean with a 95% t interval and a two-sided paired t-test (a one-sample t-test of
  the per-run differences against 0, df = runs - 1). Differences that are all equal have no
  spread: p = 0 when they are not 0, p = 1 when they are. Significant: p < 0.05.
- improved runs: I_T - I_0 >= 0.03 (3 points of test score), with a 95% Wilson interval.
"""

from __future__ import annotations

import math
from typing import Any

from stop.core.stats import mean_ci, sample_sd, t_cdf, t_ppf, wilson_interval
from stop.experiments.improve import ARM_LABELS, ARMS, member_runs
from stop.experiments.proposals import proposals_of, strategy_table
from stop.models.base import total_cost
from stop.runs.store import Run, RunStore
from stop.runs.summary import summarize as run_summary

IMPROVED_BY = 0.03
ALPHA = 0.05
DIFFS = (("IT-I0", "IT", "I0"), ("IT-baseline", "IT", "baseline"), ("baseline-I0", "baseline", "I0"))
# The STOP paper's numbers (Zelikman et al., 2023): theirs, shown beside ours, never mixed in.
PUBLISHED = {
    "gpt4_protocol": "GPT-4: 5 independent runs, mean ± SE over 50 held-out LPN instances",
    "gpt35_improved": {"k": 3, "n": 25, "ci95": wilson_interval(3, 25),
                       "what": "GPT-3.5 runs that improved by at least 3%"},
    "lpn_reference": [{"method": "chain-of-thought", "mean": 57.7, "pm": 3.0},
                      {"method": "greedy iterative improver", "mean": 64.2, "pm": 0.9}],
}


def paired(diffs: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of per-run differences, its t interval, and the two-sided paired t-test."""
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None, "t": None, "df": None, "p": None,
                "significant": False}
    m = math.fsum(diffs) / n
    out: dict[str, Any] = {"n": n, "mean": m, "lo": None, "hi": None, "t": None, "df": n - 1,
                           "p": None, "significant": False}
    if n < 2:
        return out
    se = sample_sd(diffs) / math.sqrt(n)
    if se == 0.0:
        out.update(lo=m, hi=m, t=math.copysign(math.inf, m) if m else 0.0,
                   p=0.0 if m else 1.0)
    else:
        t = m / se
        half = t_ppf((1.0 + level) / 2.0, n - 1) * se
        out.update(lo=m - half, hi=m + half, t=t, p=2.0 * (1.0 - t_cdf(abs(t), n - 1)))
    out["significant"] = out["p"] < ALPHA
    return out


def usage_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Model calls asked of the model (fresh), served (cached or from a log), tokens and cost."""
    fresh = [e for e in events if not e.get("cached")]
    return {"calls": len(fresh), "served": len(events) - len(fresh),
            "tokens": sum(int(e.get("prompt_tokens") or 0) + int(e.get("completion_tokens") or 0)
                          for e in fresh),
            "cost_usd": total_cost(fresh)}


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    cost = None if a["cost_usd"] is None or b["cost_usd"] is None else a["cost_usd"] + b["cost_usd"]
    return {"calls": a["calls"] + b["calls"], "served": a["served"] + b["served"],
            "tokens": a["tokens"] + b["tokens"], "cost_usd": cost}


def _cell(e: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [float(x) for x in e["test"]]
    m, lo, hi = mean_ci(scores)
    return {"mean": m, "lo": None if math.isnan(lo) else lo, "hi": None if math.isnan(hi) else hi,
            "n": len(scores), "scores": scores,
            "val_mean": sum(e["val"]) / len(e["val"]) if e["val"] else None,
            "fallbacks": e.get("fallbacks", 0), "improver_hash": e["improver_hash"],
            "same_as": e.get("same_as"), "usage": usage_of(calls)}


def summarize(exp: Run, store: RunStore | None = None) -> dict[str, Any]:
    """Everything the experiment's table, figures and report show, from its logs."""
    store = store or RunStore(exp.dir.parent)
    cfg = exp.config()
    members = member_runs(exp, store)
    arms: dict[tuple[str, str], dict[str, Any]] = {}
    for e in exp.iter_events("improve_arm"):
        arms[(e["source_run"], e["arm"])] = e
    calls = [e for e in exp.iter_events("model_call")]
    per_run, proposals = [], []
    labels = {e["candidate_hash"]: e["labels"] for e in exp.iter_events("judge_label")}
    for index, run in members.items():
        s = run_summary(run)
        row: dict[str, Any] = {
            "index": index, "run": run.id, "status": s["status"], "rounds": s["rounds_done"],
            "adopted": sum(1 for r in s["round_table"] if r.get("adopted")),
            "self_improvement": usage_of([e for e in run.iter_events("model_call")]),
            "wall_s": s["duration_s"], "arms": {}, "diff": {}}
        for arm in ARMS:
            e = arms.get((run.id, arm))
            if e is not None:
                prefix = f"improve/{run.id}/{arm}-{e['improver_hash'][:12]}/"
                row["arms"][arm] = _cell(e, [c for c in calls
                                             if str(c.get("scope", "")).startswith(prefix)])
        for name, a, b in DIFFS:
            if a in row["arms"] and b in row["arms"]:
                row["diff"][name] = row["arms"][a]["mean"] - row["arms"][b]["mean"]
        per_run.append(row)
        for p in proposals_of(run):
            p["judge"] = labels.get(p["hash"]) if cfg.get("judge") else None
            proposals.append(p)
    complete = [r for r in per_run if len(r["diff"]) == len(DIFFS)]
    improved = sum(1 for r in complete if r["diff"]["IT-I0"] >= IMPROVED_BY - 1e-12)
    zero = {"calls": 0, "served": 0, "tokens": 0, "cost_usd": 0.0}
    usage = {arm: zero for arm in ARMS}
    usage["self_improvement"] = zero
    for r in per_run:
        usage["self_improvement"] = _add(usage["self_improvement"], r["self_improvement"])
        for arm, c in r["arms"].items():
            if not c.get("same_as"):
                usage[arm] = _add(usage[arm], c["usage"])
    usage["judge"] = usage_of([c for c in calls if c.get("phase") == "judge"])
    return {
        "experiment": exp.id, "task": cfg.get("task"), "model": cfg.get("model") or "embedded",
        "profile": cfg.get("profile"), "rounds": cfg.get("rounds"), "trials": cfg.get("trials"),
        "runs_planned": len(cfg.get("from_runs") or []) or cfg.get("runs"),
        "from_runs": bool(cfg.get("from_runs")), "judge": cfg.get("judge"),
        "status": _status(exp), "per_run": per_run,
        "across": {name: paired([r["diff"][name] for r in complete]) for name, _, _ in DIFFS},
        "improved": {"k": improved, "n": len(complete), "by": IMPROVED_BY,
                     "ci95": wilson_interval(improved, len(complete)) if complete else None},
        "usage": usage, "strategies": strategy_table(proposals), "proposals": proposals,
        "published": PUBLISHED, "timing": _timing(exp, per_run), "arm_labels": ARM_LABELS,
    }


def _status(exp: Run) -> str:
    ends = [e for e in exp.iter_events(("run_start", "run_end"))]
    return ends[-1].get("status", "running") if ends and ends[-1]["type"] == "run_end" \
        else "running or killed"


def _timing(exp: Run, per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Elapsed time of the experiment's sessions (start to last event), and of its runs."""
    elapsed, start, last = 0.0, None, None
    for e in exp.iter_events():
        if e["type"] == "run_start":
            if start is not None and last is not None:
                elapsed += last - start
            start = e["ts"]
        last = e["ts"]
    if start is not None and last is not None:
        elapsed += last - start
    return {"experiment_s": round(elapsed, 1),
            "runs_s": round(sum(r["wall_s"] or 0.0 for r in per_run), 1)}


# ---------------------------------------------------------------- as text


def _pct(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    if cell["lo"] is None:
        return f"{100 * cell['mean']:.1f} (n={cell['n']})"
    return f"{100 * cell['mean']:.1f} [{100 * cell['lo']:.1f}, {100 * cell['hi']:.1f}]"


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def _cost(x: float | None) -> str:
    return "unknown" if x is None else f"${x:.4f}"


def _grid(heads: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [heads, ["-" * w for w in widths], *rows]]


def format_text(d: dict[str, Any]) -> str:
    out = [f"improve experiment {d['experiment']}: task {d['task']}, model {d['model']}, "
           f"profile {d['profile']}, {len(d['per_run'])}/{d['runs_planned']} run(s), "
           f"{d['trials']} trial(s) per arm, status {d['status']}", ""]
    rows = [[r["run"], str(r["rounds"]), str(r["adopted"]),
             *(_pct(r["arms"].get(a)) for a in ARMS),
             _pts(r["diff"].get("IT-I0")), _pts(r["diff"].get("IT-baseline"))]
            for r in d["per_run"]]
    out += _grid(["run", "rounds", "adopted", "I_0", "baseline", "I_T", "I_T-I_0", "I_T-base"], rows)
    out.append("test split, percent: mean [95% t interval] over the trials; differences in points")
    out.append("")
    for name, _, _ in DIFFS:
        p = d["across"][name]
        if p["mean"] is None:
            out.append(f"{name}: no run has all three arms yet")
            continue
        ci = "" if p["lo"] is None else f" [{100 * p['lo']:+.1f}, {100 * p['hi']:+.1f}]"
        test = "" if p["p"] is None else (f", paired t-test p = {p['p']:.3g} "
                                          f"({'significant' if p['significant'] else 'not significant'})")
        out.append(f"{name}: mean {100 * p['mean']:+.1f} points{ci} over {p['n']} run(s){test}")
    imp = d["improved"]
    if imp["n"]:
        lo, hi = imp["ci95"]
        out.append(f"runs improved by >= {100 * imp['by']:.0f} points: {imp['k']}/{imp['n']} "
                   f"(95% Wilson {100 * lo:.0f}%-{100 * hi:.0f}%)")
    pub = d["published"]
    g = pub["gpt35_improved"]
    out.append(f"paper (theirs): {g['what']}: {g['k']}/{g['n']} (95% Wilson "
               f"{100 * g['ci95'][0]:.0f}%-{100 * g['ci95'][1]:.0f}%); {pub['gpt4_protocol']}; "
               + "; ".join(f"{r['method']} {r['mean']}% ± {r['pm']}" for r in pub["lpn_reference"])
               + " on LPN")
    out += ["", "model use (fresh calls, served from log or cache, tokens, cost):"]
    for key, u in d["usage"].items():
        out.append(f"  {key:<18} {u['calls']:>6} {u['served']:>6} {u['tokens']:>10,} "
                   f"{_cost(u['cost_usd']):>10}")
    st = d["strategies"]
    judged = f", {st['n_judged']} judged by {d['judge']}" if d["judge"] else ""
    out += ["", f"strategies of {st['n']} proposed improver(s), {st['n_adopted']} adopted{judged}"
            " (count/n, 95% Wilson interval):"]
    srows = [[r["label"], _rate(r["all"]), _rate(r["adopted"]), _rate(r["judge"])]
             for r in st["rows"] if r["all"]["k"] or r["kind"] == "family"]
    out += _grid(["family / finding", "all", "adopted", "judge"], srows)
    t = d["timing"]
    out.append(f"time: experiment {t['experiment_s'] / 60:.1f} min (runs {t['runs_s'] / 60:.1f} min)")
    return "\n".join(out)


def _rate(r: dict[str, Any] | None) -> str:
    if not r or not r["n"]:
        return "-"
    lo, hi = r["ci95"]
    return f"{r['k']}/{r['n']} ({100 * lo:.0f}-{100 * hi:.0f}%)"
