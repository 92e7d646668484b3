"""Figures for reports: PNG files drawn with matplotlib's Agg backend (no display needed).

Every function takes plain data (the series built in `stop.reports.report`) and a path, and returns the
path. matplotlib is imported inside the functions so importing this module costs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from stop.sandbox.records import SEVERITIES

ADOPTED = "#2a9d4b"
REJECTED = "#d1495b"
INCUMBENT = "#33658a"
ARM_COLOURS = {"seed": "#9aa5b1", "seed_improver": "#f6ae2d", "improver": "#33658a"}
RUN_COLOURS = ["#33658a", "#d1495b", "#2a9d4b", "#f6ae2d", "#86bbd8", "#6a4c93", "#8d6a4f"]
SEVERITY_COLOURS = {"info": "#b0bec5", "low": "#86bbd8", "medium": "#f6ae2d", "high": "#ee6c4d",
                    "critical": "#9e0031"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _err(point: dict[str, Any]) -> tuple[float, float]:
    """Error bar half-lengths below and above the mean; zero where no interval exists."""
    lo, hi, m = point.get("lo"), point.get("hi"), point["mean"]
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return 0.0, 0.0
    return m - lo, hi - m


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")


def plot_meta_utility(series: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Incumbent and candidate meta-utility per round, val and test, with 95% intervals.

    series: one dict per round: {"round", "adopted", "incumbent": {"val": point, "test": point},
    "candidate": {...}}, a point being {"mean", "lo", "hi", "n"} or None.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, split in zip(axes, ("val", "test"), strict=True):
        ax.set_title(f"{split} split")
        ax.set_xlabel("round")
        pts = [(r["round"], r["incumbent"].get(split)) for r in series if r["incumbent"].get(split)]
        if not pts:
            _empty(ax, f"no {split} scores recorded")
            continue
        xs = [x for x, _ in pts]
        errs = list(zip(*[_err(p) for _, p in pts], strict=True))
        ax.errorbar(xs, [p["mean"] for _, p in pts], yerr=errs, color=INCUMBENT, marker="o",
                    capsize=4, lw=2, label="incumbent (before the round)")
        for adopted, colour, face, label in ((True, ADOPTED, ADOPTED, "candidate, adopted"),
                                             (False, REJECTED, "white", "candidate, rejected")):
            cps = [(r["round"], r["candidate"].get(split)) for r in series
                   if r["candidate"].get(split) and bool(r["adopted"]) == adopted]
            if not cps:
                continue
            cerrs = list(zip(*[_err(p) for _, p in cps], strict=True))
            ax.errorbar([x + 0.12 for x, _ in cps], [p["mean"] for _, p in cps], yerr=cerrs,
                        fmt="s", color=colour, mfc=face, mec=colour, mew=2, ms=8, capsize=4,
                        label=label)
        ax.set_xticks(sorted({r["round"] for r in series}))
    axes[0].set_ylabel("meta-utility (mean score, 95% t interval)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title or "Meta-utility per round")
    return _save(fig, path)


def plot_costs(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Model calls, tokens and cost per round. rows: {"round", "model_calls", "tokens", "cost_usd"}."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    rounds = [r["round"] for r in rows]
    for ax, key, label, colour in ((axes[0], "model_calls", "model calls", "#33658a"),
                                   (axes[1], "tokens", "tokens (prompt + completion)", "#86bbd8"),
                                   (axes[2], "cost_usd", "cost (USD)", "#f6ae2d")):
        vals = [r.get(key) or 0 for r in rows]
        ax.bar(rounds, vals, color=colour)
        ax.set_title(label)
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
        for x, v, r in zip(rounds, vals, rows, strict=True):
            text = f"{v:,}" if key != "cost_usd" else "unknown" if r.get(key) is None else f"{v:.4f}"
            ax.annotate(text, (x, v), ha="center", va="bottom", fontsize=8)
        if not rows:
            _empty(ax, "no rounds")
    fig.suptitle(title or "Language-model use per round")
    return _save(fig, path)


def plot_findings(counts: dict[int | None, dict[str, int]], path: Path,
                  rounds: list[int] | None = None) -> Path:
    """Audit findings per round, stacked by severity. counts: {round: {severity: n}};
    rounds: rounds to show even when they have no findings."""

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    counts = {**{r: {} for r in rounds or []}, **counts}
    keys = sorted(counts, key=lambda r: (r is None, r if r is not None else 0))
    labels = ["outside rounds" if r is None else str(r) for r in keys]
    bottom = [0] * len(keys)
    for sev in SEVERITIES:
        vals = [counts[r].get(sev, 0) for r in keys]
        if any(vals):
            ax.bar(labels, vals, bottom=bottom, color=SEVERITY_COLOURS[sev], label=sev)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xlabel("round")
    ax.set_ylabel("findings")
    ax.yaxis.get_major_locator().set_params(integer=True)
    if any(any(c.values()) for c in counts.values()):
        ax.legend(title="severity", fontsize=8)
    else:
        _empty(ax, "no audit findings")
    ax.set_title("Audit findings per round")
    return _save(fig, path)


def plot_transfer(rows: list[dict[str, Any]], path: Path, improver_label: str = "improver") -> Path:
    """Grouped bars per task: seed solution, seed improver, the run's improver, with 95% intervals.

    rows: {"task", "seed"|"seed_improver"|"improver": point or None, "published": {arm: percent}}.
    Published numbers (percent) are drawn as black diamonds where they exist.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(rows) + 2), 4.2))
    arms = (("seed", "seed solution"), ("seed_improver", "seed improver"),
            ("improver", improver_label))
    width = 0.26
    shown: set[bool] = set()
    for i, (arm, label) in enumerate(arms):
        xs, ms, errs = [], [], []
        for j, row in enumerate(rows):
            p = row.get(arm)
            if p:
                xs.append(j + (i - 1) * width)
                ms.append(100 * p["mean"])
                lo, hi = _err(p)
                errs.append((100 * lo, 100 * hi))
        if xs:
            ax.bar(xs, ms, width, yerr=list(zip(*errs, strict=True)), capsize=3,
                   color=ARM_COLOURS[arm], label=label, edgecolor="white")
        for j, row in enumerate(rows):
            pub = row.get("published") or {}
            if pub.get(arm) is None:
                continue
            same = pub.get("note", "comparable") == "comparable"
            label = ("published (STOP paper)" if same else "published, different scorer")
            ax.scatter([j + (i - 1) * width], [pub[arm]], marker="D", s=24, zorder=5,
                       color="black" if same else "white", edgecolors="black",
                       label=None if same in shown else label)
            shown.add(same)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["task"] for r in rows], rotation=15)
    ax.set_ylabel("test score (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Transfer: test score per task (mean of trials, 95% t interval)")
    return _save(fig, path)


def held_curve(series: list[dict[str, Any]], split: str) -> list[tuple[int, dict, bool]]:
    """(round, point, adopted) for the improver held after each round; round 0 is the seed as
    measured in round 1. After an adoption the held improver's score is the candidate's."""
    if not series or not series[0]["incumbent"].get(split):
        return []
    out = [(series[0]["round"] - 1, series[0]["incumbent"][split], False)]
    for r in series:
        p = r["candidate"].get(split) if r["adopted"] else r["incumbent"].get(split)
        if p:
            out.append((r["round"], p, bool(r["adopted"])))
    return out


def plot_compare(runs: list[tuple[str, list[dict[str, Any]]]], path: Path) -> Path:
    """The held improver's meta-utility per round for several runs on one figure."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, split in zip(axes, ("val", "test"), strict=True):
        ax.set_title(f"{split} split")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        drawn = False
        for k, (label, series) in enumerate(runs):
            colour = RUN_COLOURS[k % len(RUN_COLOURS)]
            pts = held_curve(series, split)
            if not pts:
                continue
            dodge = 0.06 * (k - (len(runs) - 1) / 2)
            xs = [x + dodge for x, _, _ in pts]
            errs = list(zip(*[_err(p) for _, p, _ in pts], strict=True))
            ax.errorbar(xs, [p["mean"] for _, p, _ in pts], yerr=errs, color=colour, capsize=3,
                        lw=2, label=label)
            for x, (_, p, adopted) in zip(xs, pts, strict=True):
                ax.plot([x], [p["mean"]], marker="o", ms=7, color=colour, ls="none",
                        mfc=colour if adopted else "white", mew=1.5)
            drawn = True
        if not drawn:
            _empty(ax, f"no {split} scores recorded")
    axes[0].set_ylabel("meta-utility of the held improver (95% t interval)")
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=9,
                   bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Meta-utility of the improver held after each round "
                 "(round 0: the seed; filled: a candidate was adopted)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
