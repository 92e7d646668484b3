"""Figures as inline SVG, drawn on the server from numbers.

Only numbers and fixed words go into the drawing; the one run-derived string (a tooltip's run
id) is made visible and escaped. Colours come from CSS classes in /static/ui.css (the CSP
allows no inline style).
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

from stop.cli.safe import visible

W, H = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 52, 150, 16, 36


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _series_points(series: list[dict[str, Any]], who: str, split: str) -> list[tuple]:
    pts = []
    for r in series:
        p = (r.get(who) or {}).get(split)
        if p and _ok(p.get("mean")):
            pts.append((r["round"], p["mean"], p.get("lo"), p.get("hi"), r.get("adopted")))
    return pts


def meta_utility_curve(series: list[dict[str, Any]]) -> Markup:
    """Incumbent and candidate meta-utility per round (val solid, test dashed) with 95% bars."""
    if not series:
        return Markup('<p class="muted">No round has finished yet.</p>')
    lines = [("incumbent", "val"), ("candidate", "val"), ("incumbent", "test"),
             ("candidate", "test")]
    pts = {key: _series_points(series, *key) for key in lines}
    values = [v for ps in pts.values() for p in ps for v in p[1:4] if _ok(v)]
    lo, hi = min([0.0, *values]), max([1.0, *values])
    rounds = [r["round"] for r in series]
    x0, x1 = min(rounds) - 0.5, max(rounds) + 0.5
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * pw

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * ph

    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           'aria-label="meta-utility per round" xmlns="http://www.w3.org/2000/svg">']
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}"/><text class="tick" x="{LEFT - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v:.2f}</text>')
    step = max(1, math.ceil(len(rounds) / 20))
    for r in rounds[::step]:
        out.append(f'<text class="tick" x="{x(r):.1f}" y="{TOP + ph + 16}" '
                   f'text-anchor="middle">{int(r)}</text>')
    out.append(f'<text class="axis" x="{LEFT + pw / 2:.1f}" y="{H - 4}" '
               'text-anchor="middle">round</text>')
    for (who, split), ps in pts.items():
        cls = f"{who} {split}"
        dx = -0.08 if who == "incumbent" else 0.08
        if len(ps) > 1:
            path = " ".join(f"{x(r + dx):.1f},{y(m):.1f}" for r, m, *_ in ps)
            out.append(f'<polyline class="line {cls}" points="{path}"/>')
        for r, m, plo, phi, adopted in ps:
            cx = x(r + dx)
            if _ok(plo) and _ok(phi):
                out.append(f'<line class="bar {cls}" x1="{cx:.1f}" x2="{cx:.1f}" '
                           f'y1="{y(plo):.1f}" y2="{y(phi):.1f}"/>')
            mark = "adopted" if (who == "candidate" and adopted) else "kept"
            tip = f"round {r}, {who} {split}: {m:.3f}"
            if _ok(plo) and _ok(phi):
                tip += f" [{plo:.3f}, {phi:.3f}]"
            if who == "candidate":
                tip += ", adopted" if adopted else ", rejected"
            out.append(f'<circle class="dot {cls} {mark}" cx="{cx:.1f}" cy="{y(m):.1f}" r="4">'
                       f'<title>{escape(tip)}</title></circle>')
    legend = [("incumbent val", "incumbent val"), ("candidate val", "candidate val"),
              ("incumbent test", "incumbent test"), ("candidate test", "candidate test")]
    for i, (cls, label) in enumerate(legend):
        ly = TOP + 14 + 20 * i
        out.append(f'<line class="line {cls}" x1="{W - RIGHT + 12}" x2="{W - RIGHT + 34}" '
                   f'y1="{ly}" y2="{ly}"/><text class="legend" x="{W - RIGHT + 40}" '
                   f'y="{ly + 4}">{label}</text>')
    out.append(f'<text class="legend" x="{W - RIGHT + 12}" y="{TOP + 110}">filled: adopted</text>')
    out.append("</svg>")
    return Markup("".join(out))


def rate_chart(rows: list[dict[str, Any]]) -> Markup:
    """Rates with their intervals, one row each: {"label", "rate", "lo", "hi", "ours"}."""
    if not rows:
        return Markup("")
    top = max([0.01, *(r["hi"] for r in rows if _ok(r.get("hi")))]) * 1.1
    rh, left, width = 24, 260, 420
    height = rh * len(rows) + 30
    out = [f'<svg class="chart" viewBox="0 0 {left + width + 20} {height}" '
           f'width="{left + width + 20}" height="{height}" role="img" '
           'aria-label="rates with 95% intervals" xmlns="http://www.w3.org/2000/svg">']

    def x(v: float) -> float:
        return left + v / top * width

    for i, r in enumerate(rows):
        cy = 14 + i * rh
        label = escape(visible(r["label"]))
        cls = "ours" if r.get("ours") else "paper"
        out.append(f'<text class="legend" x="{left - 8}" y="{cy + 4}" text-anchor="end">'
                   f'{label}</text>')
        if _ok(r.get("lo")) and _ok(r.get("hi")):
            out.append(f'<line class="bar {cls}" x1="{x(r["lo"]):.1f}" x2="{x(r["hi"]):.1f}" '
                       f'y1="{cy}" y2="{cy}"/>')
        if _ok(r.get("rate")):
            out.append(f'<circle class="dot {cls}" cx="{x(r["rate"]):.1f}" cy="{cy}" r="4"/>')
    for k in range(5):
        v = top * k / 4
        out.append(f'<text class="tick" x="{x(v):.1f}" y="{height - 4}" '
                   f'text-anchor="middle">{100 * v:.1f}%</text>')
    out.append("</svg>")
    return Markup("".join(out))
