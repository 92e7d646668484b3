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

from stop.core.budget import Budget
from stop.core.improver import ImproverRun, Memo, RunContext
from stop.core.meta import meta_setup
from stop.core.stats import mean_ci
from stop.errors import StopError
from stop.models import Model, resolve_model
from stop.models.gateway import Gateway
from stop.runs.recorders import EventTee, logged_identities
from stop.runs.replay import recorded_replies
from stop.runs.store import Run
from stop.sandbox import Sandbox, open_sandbox
from stop.sandbox.records import source_hash
from stop.tasks.loader import Task, load_task
from stop.tasks.scoring import score_solution

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
    model: str | None = None

    @property
    def scope(self) -> str:
        who = self.arm if self.improver_hash is None else f"{self.arm}-{self.improver_hash}"
        return f"transfer/{self.task}/{who}/{self.trial}"

    def matches(self, event: dict[str, Any]) -> bool:
        return (event.get("task") == self.task and event.get("arm") == self.arm
                and event.get("trial") == self.trial
                and event.get("improver_hash") == self.improver_hash
                and (self.arm == "seed" or event.get("model") == self.model))


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


def plan_trials(tasks: Iterable[str], trials: int, seed_hash: str, improver_hash: str,
                model: str | None) -> list[TrialSpec]:
    hashes = {"seed": None, "seed_improver": seed_hash, "improver": improver_hash}
    return [TrialSpec(t, arm, k, hashes[arm], None if arm == "seed" else model)
            for t in tasks for arm in ARMS for k in range(trials)]


def finished_trials(run: Run) -> list[dict[str, Any]]:
    return run.events("transfer_trial")


def summarize(trials: list[dict[str, Any]], tasks: Iterable[str], *,
              hashes: dict[str, str | None] | None = None, max_trials: int | None = None,
              model: str | None = None, level: float = 0.95) -> list[dict[str, Any]]:
    """Rows of the transfer table from `transfer_trial` events.

    hashes picks the improver of each arm (None: any); model, the model of the improver arms
    (None: any); max_trials keeps trials 0..K-1 only.
    Each arm's cell is {"mean", "lo", "hi", "n", "scores", "fallbacks"}, scores being fractions
    in [0, 1]; "fallbacks" counts trials whose improver returned nothing usable (scored as the
    unchanged seed solution).
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
                if model is not None and arm != "seed" and e.get("model") != model:
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
                        "fallbacks": sum(1 for k in chosen if chosen[k].get("status") == "fallback")}
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
        fails = sum((row.get(a) or {}).get("fallbacks", 0) for a in ARMS)
        note = pub.get("note", "")
        if fails:
            note = f"{note}; {fails} trial(s) fell back to the seed solution".lstrip("; ")
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


Improve = Callable[[str, Task, TrialSpec], dict[str, Any]]
Score = Callable[[Task, str], float]


def execute_trials(run: Run, specs: list[TrialSpec], *, improve: Improve, score: Score,
                   task_objects: dict[str, Task], sources: dict[str, str], model: str | None,
                   improver_rounds: dict[str, int | None], jobs: int = 1,
                   on_trial: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run the trials not yet in the log; append one `transfer_trial` event per finished trial.

    improve(improver_source, task, spec) returns {"returned": source, "fallback": bool,
    "reason": str}: an improver that crashes or returns no source counts as returning its input
    unchanged (the meta-utility's rule), so such a trial scores the seed solution and is marked
    "fallback". score(task, source) returns the test score in [0, 1]. Any exception (model or
    sandbox unavailable, interrupt) stops the transfer; finished trials stay in the log.
    """
    done = finished_trials(run)
    pending = [s for s in specs if not any(s.matches(e) for e in done)]
    recorder = run.recorder(phase="transfer")
    lock = threading.Lock()

    def one(spec: TrialSpec) -> dict[str, Any]:
        task = task_objects[spec.task]
        start = time.monotonic()
        status, reason, solution = "ok", None, task.seed_source
        if spec.arm != "seed":
            outcome = improve(sources[spec.arm], task, spec)
            solution = outcome["returned"]
            if outcome.get("fallback"):
                status, reason = "fallback", outcome.get("reason")
        value = score(task, solution)
        event = {"task": spec.task, "arm": spec.arm, "trial": spec.trial, "status": status,
                 "score": float(value), "improver_round": improver_rounds.get(spec.arm),
                 "improver_hash": spec.improver_hash, "model": model if spec.arm != "seed" else None,
                 "solution_hash": source_hash(solution),
                 "wall_s": round(time.monotonic() - start, 3), "error": reason}
        with lock:
            recorder.record("transfer_trial", **event)
        if on_trial:
            on_trial(event)
        return event

    if jobs <= 1:
        return [one(spec) for spec in pending]
    results = []
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="transfer") as pool:
        futures = [pool.submit(one, s) for s in pending]
        try:
            for f in as_completed(futures):
                results.append(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def run_transfer(run: Run, *, tasks: list[str], trials: int = 5, improver_round: int | None = None,
                 jobs: int = 1, model_spec: str | None = None, sandbox: Sandbox | None = None,
                 model: Model | None = None,
                 on_trial: Callable[[dict[str, Any]], None] | None = None,
                 on_start: Callable[[int, int, str], None] | None = None,
                 runtime: str | None = None, improver_source: str | None = None,
                 improver_name: str | None = None) -> dict[str, Any]:
    """Evaluate (resuming) and store the transfer table of a run; returns the table.

    The model is the run's (config.json) unless model_spec or a Model object is given; the
    sandbox is the run's backend unless a Sandbox is given (runtime: the Docker runtime instead
    of the run's sandbox_runtime). Budgets per improver run are the
    run's base-task budgets (lm_budget, max_responses_per_call, utility_budget, max_tokens,
    improver_wall_s). improver_source: an improver from elsewhere (a file named improver_name)
    in place of the run's; its trials are its own, keyed by its hash.
    """

    if trials < 1:
        raise TransferError("--trials must be at least 1")
    if jobs < 1:
        raise TransferError("--jobs must be at least 1")
    if not tasks:
        raise TransferError("no tasks given")
    config = run.config()
    if runtime is not None:
        config = {**config, "sandbox_runtime": runtime}
    task_objects = {}
    for name in dict.fromkeys(tasks):
        t = load_task(name)
        if t.kind != "solve":
            raise TransferError(f"task {name} is a {t.kind} task; transfer needs solve tasks")
        task_objects[name] = t
    last = final_round(run) if improver_source is None else 0
    chosen = last if improver_round is None else improver_round
    if improver_source is None and (chosen < 0 or not run.improver_path(chosen).exists()):
        raise TransferError(f"run {run.id} has no improver for round {chosen} "
                            f"(rounds 0..{last} exist)")
    seed_task = load_task(str(config.get("seed_improver") or "meta_optimization"))
    seed_src = (run.read_improver(0) if run.improver_path(0).exists() else seed_task.seed_source)
    sources = {"seed_improver": seed_src, "improver": run.read_improver(chosen)
               if improver_source is None else improver_source}
    label = f"round {chosen} improver" if improver_source is None else \
        f"improver from {improver_name or 'a file'}"
    chosen = chosen if improver_source is None else None
    _, _, _, flag = meta_setup(seed_task)
    budget = Budget.of_run(config)

    spec_str = model_spec or config.get("model") or "embedded"
    # Trials are identified by the model as the user names it, so a finished transfer is read
    # back without starting a model or a sandbox.
    model_name = (model.name if model is not None else None) or str(spec_str)
    specs = plan_trials(task_objects, trials, source_hash(seed_src),
                        source_hash(sources["improver"]), model_name)
    done = finished_trials(run)
    pending = sum(1 for s in specs if not any(s.matches(e) for e in done))
    if on_start:
        on_start(pending, len(specs), label)
    if pending:
        with run.owned():  # one process writes a run at a time (a resume of it is refused)
            _execute(run, specs, config=config, budget=budget, model=model, spec_str=spec_str,
                     sandbox=sandbox, sources=sources, task_objects=task_objects, chosen=chosen,
                     flag=flag, model_name=model_name, jobs=jobs, on_trial=on_trial)
    hashes = {"seed_improver": source_hash(seed_src), "improver": source_hash(sources["improver"])}
    table = {
        "run": run.id, "tasks": list(task_objects), "trials": trials, "model": model_name,
        "improver_round": chosen, "improver_hash": hashes["improver"],
        "seed_improver_hash": hashes["seed_improver"],
        "improver_label": label,
        "budgets": budget.to_dict(),
        "method": "mean over trials with a two-sided 95% Student t interval",
        "rows": summarize(finished_trials(run), task_objects, hashes=hashes, max_trials=trials,
                          model=model_name),
    }
    run.write_json("transfer.json", table)
    return table


def _execute(run: Run, specs: list[TrialSpec], *, config: dict[str, Any], budget: Budget,
             model: Model | None, spec_str: str, sandbox: Sandbox | None,
             sources: dict[str, str], task_objects: dict[str, Task], chosen: int | None, flag: bool,
             model_name: str, jobs: int,
             on_trial: Callable[[dict[str, Any]], None] | None) -> None:
    """Open the model and the sandbox (unless given) and run the pending trials."""
    recorder = run.recorder(phase="transfer")
    own_model, own_sandbox = model is None, sandbox is None
    if model is None:
        model = resolve_model(None if spec_str == "embedded" else spec_str,
                              api_base=config.get("api_base"))
    try:
        if sandbox is None:
            sandbox = open_sandbox(str(config.get("sandbox", "docker")),
                                   runtime=config.get("sandbox_runtime"))
        # Replies already logged by an interrupted trial are served again from the log, so a
        # resumed trial asks the model nothing it has answered before.
        events = run.events()
        recorded = recorded_replies(events, phase="transfer")
        # What a resumed trial redoes (served calls, improver runs) is logged once, not again.
        recorder = EventTee(recorder, logged=logged_identities(events))
        gateway = Gateway(model, recorder=recorder, recorded=recorded)
        context = RunContext(sandbox=sandbox, gateway=gateway, recorder=recorder, jobs=jobs,
                             memo=Memo(events))

        def test_score(task: Task, source: str) -> float:
            return float(score_solution(task, source, split="test", sandbox=context.sandbox,
                                        recorder=recorder).score)

        def improve(source: str, task: Task, spec: TrialSpec) -> dict[str, Any]:
            rec = recorder.bind(task=spec.task, arm=spec.arm, trial=spec.trial)
            trial = ImproverRun(context, budget, spec.scope, use_sandbox_param=flag, recorder=rec)
            utility = trial.utility(lambda src: float(score_solution(
                task, src, split="val", sandbox=context.sandbox, recorder=rec).score), task.name)
            out = trial.run(source, initial_solution=task.seed_source,
                            description=task.description, utility=utility)
            return {"returned": out.returned, "fallback": out.fallback, "reason": out.reason}

        execute_trials(run, specs, improve=improve, score=test_score, task_objects=task_objects,
                       sources=sources, model=model_name,
                       improver_rounds={"seed": None, "seed_improver": 0, "improver": chosen},
                       jobs=jobs, on_trial=on_trial)
    finally:
        if own_sandbox and sandbox is not None:
            sandbox.close()
        if own_model:
            model.close()
