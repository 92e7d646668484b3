"""Transfer evaluation: the STOP paper's Table 1 for any run.

For each downstream task, three arms are scored on the task's TEST split, each over K
independent trials:

- `seed`: the task's seed solution as it is;
- `seed_improver`: the seed improver (round 0 of the run) applied to the seed solution;
- `improver`: the run's improver (the last adopted one, or a chosen round) applied to it.

A trial of an improver arm is one improver run with fresh budgets (its own model-call scope, so
trials draw independent samples), followed by scoring what it returned on the test split on the
host. Every finished trial is one `transfer_trial` event in the run's log; a restarted transfer
reads them back and redoes nothing that finished. `transfer.json` holds the latest table.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from stop.errors import StopError
from stop.records import source_hash
from stop.stats import mean_ci
from stop.store import Run

TRANSFER_TASKS = ("parity_noiseless", "str_grid_dist", "modified_quadratic_assignment",
                  "three_sat", "maxcut")
ARMS = ("seed", "seed_improver", "improver")
ARM_LABELS = {"seed": "seed solution", "seed_improver": "seed improver", "improver": "improver"}

# Percent, from the STOP paper (Table 1) as summarised in the project's task notes.
PUBLISHED: dict[str, dict[str, Any]] = {
    "parity_noiseless": {"seed": 50.0, "seed_improver": 59.3, "improver": 81.7,
                         "note": "comparable"},
    "str_grid_dist": {"seed": 43.9, "seed_improver": 44.3, "improver": 56.7,
                      "note": "comparable"},
    "modified_quadratic_assignment": {"seed": 20.4, "seed_improver": 20.6, "improver": 22.1,
                                      "note": "published scorer differs; not comparable"},
    "three_sat": {"seed": 0.0, "seed_improver": 21.2, "improver": 75.1,
                  "note": "published scorer was all-or-nothing; not comparable"},
    "maxcut": {"seed": 0.0, "seed_improver": 58.7, "improver": 74.2,
               "note": "published normalisation unknown; not comparable"},
}


class TransferError(StopError):
    """A transfer evaluation cannot start (bad task, round or trial count)."""


@dataclass(frozen=True)
class TrialSpec:
    task: str
    arm: str
    trial: int
    improver_hash: str | None

    @property
    def scope(self) -> str:
        who = self.arm if self.improver_hash is None else f"{self.arm}-{self.improver_hash}"
        return f"transfer/{self.task}/{who}/{self.trial}"

    def matches(self, event: dict[str, Any]) -> bool:
        return (event.get("task") == self.task and event.get("arm") == self.arm
                and event.get("trial") == self.trial
                and event.get("improver_hash") == self.improver_hash)


def final_round(run: Run) -> int:
    """The round of the last improver file: round_K.py is the incumbent after round K."""
    files = sorted((run.dir / "improvers").glob("round_*.py"))
    rounds = []
    for f in files:
        try:
            rounds.append(int(f.stem.split("_", 1)[1]))
        except ValueError:
            continue
    if not rounds:
        raise TransferError(f"run {run.id} has no improvers; it has not started a round yet")
    return max(rounds)


def plan_trials(tasks: Iterable[str], trials: int, seed_hash: str,
                improver_hash: str) -> list[TrialSpec]:
    hashes = {"seed": None, "seed_improver": seed_hash, "improver": improver_hash}
    return [TrialSpec(t, arm, k, hashes[arm]) for t in tasks for arm in ARMS for k in range(trials)]


def finished_trials(run: Run) -> list[dict[str, Any]]:
    return run.events("transfer_trial")


def summarize(trials: list[dict[str, Any]], tasks: Iterable[str], *,
              hashes: dict[str, str | None] | None = None, max_trials: int | None = None,
              level: float = 0.95) -> list[dict[str, Any]]:
    """Rows of the transfer table from `transfer_trial` events.

    hashes picks the improver of each arm (None: any); max_trials keeps trials 0..K-1 only.
    Each arm's cell is {"mean", "lo", "hi", "n", "scores", "failed"}, scores being fractions in
    [0, 1]; a trial whose improver failed scores 0 and is counted in "failed".
    """
    rows = []
    for task in tasks:
        row: dict[str, Any] = {"task": task, "published": PUBLISHED.get(task, {})}
        for arm in ARMS:
            want = (hashes or {}).get(arm)
            chosen: dict[int, dict[str, Any]] = {}
            for e in trials:
                if e.get("task") != task or e.get("arm") != arm:
                    continue
                if want is not None and e.get("improver_hash") != want:
                    continue
                if max_trials is not None and e.get("trial", 0) >= max_trials:
                    continue
                chosen[e.get("trial", 0)] = e  # a later record of the same trial wins
            scores = [float(chosen[k]["score"]) for k in sorted(chosen)]
            if not scores:
                row[arm] = None
                continue
            m, lo, hi = mean_ci(scores, level)
            row[arm] = {"mean": m, "lo": lo, "hi": hi, "n": len(scores), "scores": scores,
                        "failed": sum(1 for k in chosen if chosen[k].get("status") != "ok")}
        rows.append(row)
    return rows


def _pct(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    m, lo, hi = cell["mean"], cell["lo"], cell["hi"]
    if math.isnan(lo):
        return f"{100 * m:.1f} (n=1)"
    return f"{100 * m:.1f} ± {100 * (hi - m):.1f}"


def _pub(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_table(table: dict[str, Any]) -> str:
    """The table as text: ours (mean ± half-width of the 95% t interval, percent) and the paper's."""
    label = table.get("improver_label", "improver")
    heads = ["task", "seed solution", "seed improver", label, "paper: seed / I0 / IT", "note"]
    body = []
    for row in table["rows"]:
        pub = row.get("published") or {}
        paper = " / ".join(_pub(pub.get(a)) for a in ARMS) if pub else "-"
        fails = sum((row.get(a) or {}).get("failed", 0) for a in ARMS)
        note = pub.get("note", "")
        if fails:
            note = f"{note}; {fails} failed trial(s) scored 0".lstrip("; ")
        body.append([row["task"], *(_pct(row.get(a)) for a in ARMS), paper, note])
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *body, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    out.append(f"test split, percent; mean ± half-width of the 95% Student t interval over "
               f"{table.get('trials', '?')} trial(s); model {table.get('model', '?')}")
    return "\n".join(out)


def load_table(run: Run) -> dict[str, Any] | None:
    """The latest transfer table stored with the run; else one rebuilt from its trials; or None."""
    table = run.read_json("transfer.json")
    if table is not None:
        return table
    trials = finished_trials(run)
    if not trials:
        return None
    last = [e for e in trials if e.get("arm") == "improver"]
    hashes = {"improver": last[-1].get("improver_hash")} if last else {}
    rounds = [e.get("improver_round") for e in last[-1:]]
    tasks = list(dict.fromkeys(e["task"] for e in trials))
    rows = summarize(trials, tasks, hashes=hashes)
    counts = [c["n"] for r in rows for c in (r.get(a) for a in ARMS) if c]
    return {"rows": rows, "tasks": tasks, "trials": max(counts) if counts else 0,
            "model": next((e.get("model") for e in reversed(trials) if e.get("model")), None),
            "improver_round": rounds[0] if rounds else None,
            "improver_label": f"round {rounds[0]} improver" if rounds and rounds[0] is not None
            else "improver"}


Improve = Callable[[str, Any, TrialSpec], str]
Score = Callable[[Any, str], float]


def execute_trials(run: Run, specs: list[TrialSpec], *, improve: Improve, score: Score,
                   task_objects: dict[str, Any], sources: dict[str, str], model: str,
                   improver_rounds: dict[str, int | None], jobs: int = 1,
                   on_trial: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run the trials not yet in the log; append one `transfer_trial` event per finished trial.

    improve(improver_source, task, spec) returns the improved solution source; an exception
    there makes the trial a failure scored 0 (with the error kept), like a crashed improver in
    the meta-utility. score(task, source) returns the test score in [0, 1].
    """
    done = finished_trials(run)
    pending = [s for s in specs if not any(s.matches(e) for e in done)]
    recorder = run.recorder(phase="transfer")
    lock = threading.Lock()

    def one(spec: TrialSpec) -> dict[str, Any]:
        task = task_objects[spec.task]
        start = time.monotonic()
        status, error, solution = "ok", None, task.seed_source
        if spec.arm != "seed":
            try:
                solution = improve(sources[spec.arm], task, spec)
                if not isinstance(solution, str):
                    raise TypeError(f"improver returned {type(solution).__name__}, not source text")
            except StopError as e:
                if not _trial_level(e):
                    raise
                status, error, solution = "improver_failed", str(e), None
            except Exception as e:  # noqa: BLE001 - one trial's failure is recorded, not fatal
                status, error, solution = "improver_failed", f"{type(e).__name__}: {e}", None
        value = score(task, solution) if solution is not None else 0.0
        event = {"task": spec.task, "arm": spec.arm, "trial": spec.trial, "status": status,
                 "score": float(value), "improver_round": improver_rounds.get(spec.arm),
                 "improver_hash": spec.improver_hash, "model": model if spec.arm != "seed" else None,
                 "solution_hash": source_hash(solution) if solution is not None else None,
                 "wall_s": round(time.monotonic() - start, 3), "error": error}
        with lock:
            recorder.record("transfer_trial", **event)
        if on_trial:
            on_trial(event)
        return event

    results = []
    if jobs <= 1:
        for spec in pending:
            results.append(one(spec))
        return results
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, s) for s in pending]
        for f in as_completed(futures):
            results.append(f.result())
    return results


def _trial_level(e: StopError) -> bool:
    """Errors that end one trial (a budget spent, a model refusing) rather than the transfer.

    A sandbox that cannot start or a model backend that is unreachable would fail every trial
    the same way; those stop the transfer so it can be resumed once fixed.
    """
    fatal = ("SandboxUnavailable", "ConfigError", "TaskError", "StoreError", "ModelError",
             "BudgetExceeded")
    return not any(c.__name__ in fatal for c in type(e).__mro__)
