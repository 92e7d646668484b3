"""What the runs of an experiment proposed: each improver with its strategy tags and their
lines, whether a round adopted it, its audit findings by rule; the frequency table over all
proposals and over the adopted ones; and the prompt and parser of an optional model judge.

The sources are hostile text: they are read from the run folders and parsed, never run; the
judge only sees them as text, and only family names are taken from its reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from stop.core.stats import wilson_interval
from stop.experiments.strategies import FAMILIES, LABELS, Tagging, tag_source
from stop.models.base import Model
from stop.models.gateway import Gateway, LanguageModel
from stop.runs.replay import recorded_replies
from stop.runs.store import Run, StoreError


def proposals_of(run: Run) -> list[dict[str, Any]]:
    """Every improver a run proposed: the ones its self-improvement step scored with the
    meta-utility and the one each round returned, minus that round's incumbent; with the
    tags, their lines, whether a round adopted it, and its audit findings by rule."""
    incumbent = {e["round"]: e.get("incumbent_hash") for e in run.iter_events("round_start")}
    ends = {e["round"]: e for e in run.iter_events("round_end")}
    seen: dict[str, int] = {}
    for e in run.iter_events(("utility_call", "round_end")):
        t = e.get("round")
        h = e.get("solution_hash") if e["type"] == "utility_call" else e.get("candidate_hash")
        if e["type"] == "utility_call" and e.get("utility") != "meta":
            continue
        if isinstance(h, str) and isinstance(t, int) and h != incumbent.get(t) and h not in seen:
            seen[h] = t
    adopted = {e["candidate_hash"] for e in ends.values() if e.get("adopted")}
    rules: dict[str, set[str]] = {}
    for f in run.findings():
        if f.role == "improver":
            rules.setdefault(f.candidate_hash, set()).add(f.rule)
    out = []
    for h, t in seen.items():
        try:
            source = run.candidate_path(h).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, StoreError):
            source = None
        tagging = tag_source(source) if source is not None else Tagging(parsed=False,
                                                                         error="source missing")
        out.append({"run": run.id, "hash": h, "round": t, "adopted": h in adopted,
                    "tags": [f for f in FAMILIES if f in tagging.tags],
                    "evidence": {f: [list(x) for x in v]
                                 for f, v in tagging.lines(source or "").items()},
                    "rules": sorted(rules.get(h, ())), "parsed": tagging.parsed,
                    "error": tagging.error, "judge": None})
    return out


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": k / n if n else None,
            "ci95": wilson_interval(k, n) if n else None}


def strategy_table(proposals: list[dict[str, Any]]) -> dict[str, Any]:
    """Frequency of each family and each audit rule, over all proposals and over the adopted
    ones, with 95% Wilson intervals; the judge's labels beside, over the proposals it judged."""
    adopted = [p for p in proposals if p["adopted"]]
    judged = [p for p in proposals if p.get("judge") is not None]
    rows = []
    for f in FAMILIES:
        rows.append({"key": f, "label": LABELS[f], "kind": "family",
                     "all": _rate(sum(f in p["tags"] for p in proposals), len(proposals)),
                     "adopted": _rate(sum(f in p["tags"] for p in adopted), len(adopted)),
                     "judge": _rate(sum(f in p["judge"] for p in judged), len(judged))})
    for r in sorted({r for p in proposals for r in p["rules"]}):
        rows.append({"key": r, "label": f"finding: {r}", "kind": "rule",
                     "all": _rate(sum(r in p["rules"] for p in proposals), len(proposals)),
                     "adopted": _rate(sum(r in p["rules"] for p in adopted), len(adopted)),
                     "judge": None})
    return {"n": len(proposals), "n_adopted": len(adopted), "n_judged": len(judged),
            "n_unparsed": sum(1 for p in proposals if not p.get("parsed", True)), "rows": rows}


# ---------------------------------------------------------------- the judge's labels

JUDGE_EXPERTISE = "You classify optimization code. Answer with labels only."


def judge_message(source: str) -> str:
    families = "\n".join(f"- {f}: {LABELS[f]}" for f in FAMILIES)
    fence = "`" * 3
    return (f"Here is an improver: a Python function that uses a language model to improve a "
            f"program.\n{fence}python\n{source}\n{fence}\n\nWhich of these strategy families "
            f"does the code itself implement (not just mention)?\n{families}\n\nAnswer with "
            f"the family names from the list, separated by commas, or `none`.")


def parse_judge(reply: str) -> list[str]:
    """The family names in a judge's reply (anything else in it is ignored)."""
    words = set(re.findall(r"[a-z_]+", (reply or "").lower()))
    return [f for f in FAMILIES if f in words]


def judge_proposals(exp: Run, judge: Model, runs: list[Run], say: Callable[[str], None]) -> None:
    """Ask the judge model for the families of every proposal it has not labelled yet. The
    judge reads the code as text on the host; only family names are kept from its reply."""
    labelled = {e["candidate_hash"] for e in exp.iter_events("judge_label")}
    recorder = exp.recorder(phase="judge")
    gateway = Gateway(judge, recorder=recorder, recorded=recorded_replies(exp))
    try:
        for run in runs:
            for p in proposals_of(run):
                if p["hash"] in labelled or not p["parsed"]:
                    continue
                source = run.candidate_path(p["hash"]).read_text(encoding="utf-8")
                lm = LanguageModel(gateway, budget=1, max_responses_per_call=1,
                                   scope=f"judge/{p['hash'][:16]}", max_tokens=64)
                labels = parse_judge(lm.prompt(JUDGE_EXPERTISE, judge_message(source),
                                               temperature=0.0)[0])
                recorder.record("judge_label", candidate_hash=p["hash"], labels=labels,
                                source_run=run.id)
                labelled.add(p["hash"])
                say(f"judge: {p['hash'][:12]} -> {', '.join(labels) or 'none'}")
    finally:
        judge.close()
