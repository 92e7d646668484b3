"""What a replay needs from a recorded run: its model replies, and how its scores compare."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stop.runs.store import Run


def recorded_replies(run: Run | Iterable[dict[str, Any]],
                     phase: str | None = None) -> dict[str, dict[str, Any]]:
    """{key: model_call event} of every logged reply (of one phase, if given): what a resumed or
    replayed run serves again instead of asking the model. Takes a run or its events."""
    events = run.iter_events("model_call") if isinstance(run, Run) else run
    return {e["key"]: e for e in events
            if e.get("type") == "model_call" and e.get("key") and "texts" in e
            and (phase is None or e.get("phase") == phase)}


def _scores(run: Run) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for e in run.iter_events(("evaluation", "improver_test", "utility_call")):
        if e["type"] == "evaluation":
            for i, v in enumerate(e["scores"]):
                out[("evaluation", e["round"], e["who"], e["split"], e["candidate_hash"], i)] = v
        elif e["type"] == "improver_test":
            out[("improver_test", e["scope"], "val")] = e["val"]
            out[("improver_test", e["scope"], "test")] = e["test"]
        else:
            out[("utility", e["scope"], e["solution_hash"], e["occurrence"])] = e["value"]
    return out


def compare_replay(original: Run, replayed: Run, tolerance: float) -> tuple[int, int, list[str]]:
    """(scores compared, scores identical, differences) between a run and its replay."""
    diffs: list[str] = []
    a, b = _scores(original), _scores(replayed)
    same = 0
    for key in sorted(set(a) | set(b), key=str):
        name = " ".join(map(str, key))
        if key not in b:
            diffs.append(f"{name}: recorded {a[key]:.4f}, not reproduced")
        elif key not in a:
            diffs.append(f"{name}: new in the replay ({b[key]:.4f})")
        elif a[key] == b[key]:
            same += 1
        elif abs(a[key] - b[key]) > tolerance:
            diffs.append(f"{name}: recorded {a[key]:.4f}, replay {b[key]:.4f}")
    ends_a = {e["round"]: e for e in original.iter_events("round_end")}
    ends_b = {e["round"]: e for e in replayed.iter_events("round_end")}
    for t in sorted(set(ends_a) | set(ends_b)):
        ea, eb = ends_a.get(t, {}), ends_b.get(t, {})
        for k in ("adopted", "candidate_hash", "kept_hash"):
            if ea.get(k) != eb.get(k):
                diffs.append(f"round {t} {k}: recorded {ea.get(k)}, replay {eb.get(k)}")
    return len(a), same, diffs
