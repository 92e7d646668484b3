"""Self-improvement rounds: I_t = I_{t-1}(Û, I_{t-1}, L), adopted only when it re-evaluates better.

`self_improvement` is the paper's loop and fits on one screen. `Rounds` supplies its steps for
one run on disk: it starts or resumes the run, hands each round a fresh model budget, logs
every step, and reuses anything already logged, so a run killed at any moment (kill -9
included) resumes without redoing a finished round, paying twice for a model call, or writing
a result into its history twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from stop.core.config import RunConfig
from stop.core.improver import HostUtility, ImproverRun, Memo, RunContext
from stop.core.meta import MetaScores, MetaUtility, meta_description
from stop.core.stats import improvement_test
from stop.errors import StopError
from stop.models.caps import SpendingCaps
from stop.models.gateway import Gateway, LanguageModel
from stop.runs.events import SCHEMA_VERSION
from stop.runs.recorders import EventTee, logged_identities
from stop.runs.replay import recorded_replies
from stop.runs.store import Run, RunStore
from stop.runs.summary import finished_rounds, usage, write_summary
from stop.sandbox.records import source_hash
from stop.tasks.loader import load_task


def self_improvement(r: Rounds, incumbent: str, rounds: range) -> str:
    """STOP's loop. `incumbent` is I_0 (the seed) or the improver a resumed run had adopted."""
    for t in rounds:
        r.begin(t, incumbent)
        U = r.meta_utility(t)                        # Û: mean val score of n_tests runs on the task
        L = r.language_model(t)                      # L: a fresh model budget for this round
        candidate = r.improve(incumbent, U, L)       # I_t = I_{t-1}(Û, I_{t-1}, L)
        old = r.evaluate(t, "incumbent", incumbent)  # re-evaluation: fresh runs, not the search's
        new = r.evaluate(t, "candidate", candidate)
        adopt, why = r.decide(incumbent, candidate, old, new)
        if adopt:
            incumbent = candidate
        r.end(t, incumbent, candidate, adopt, why, old, new)
    return incumbent


# The events a resumed run reuses: results to serve again, and once-only results not to log twice.
RESUMED = ("utility_call", "improver_test", "evaluation", "model_call", "round_start",
           "improver_run")


class Rounds:
    """The steps of `self_improvement` for one run on disk."""

    def __init__(self, run: Run, cfg: RunConfig, *, model: Any, sandbox: Any,
                 listener: Any = None, pin: list[dict] | None = None) -> None:
        self.run, self.cfg, self.model, self.sandbox = run, cfg, model, sandbox
        self.listener = listener or (lambda event: None)
        # One pass over the log, keeping only what a resume reuses (the log can be large).
        events = list(run.iter_events(RESUMED))
        self.memo = Memo(events) if pin is None else Memo(pin, pinned=True)
        self.evaluations = {(e["round"], e["who"], e["split"], e["candidate_hash"]): e
                            for e in events if e["type"] == "evaluation"}
        self.recorded = recorded_replies(events)
        self.log = EventTee(run.recorder(), self.listener, logged_identities(events))
        # A replay model brings another run's calls: served like this run's own, but logged.
        self.recorded = {**model.recorded, **self.recorded}
        # One spending ledger for the whole run, started from what its log says was spent.
        self.caps = SpendingCaps.of_run(events, run_id=run.id, max_cost_usd=cfg.max_cost_usd,
                                        max_tokens_total=cfg.max_tokens_total)
        self.base = load_task(cfg.task)
        meta_task = load_task(cfg.seed_improver)
        self.flag = bool(meta_task.settings.get("use_sandbox_param", False))
        self.budget = cfg.base_budget()
        self.description = meta_description(
            meta_task.description, base_task=self.base, n_tests=cfg.n_tests, base=self.budget,
            meta_utility_calls=cfg.meta_utility_budget)
        self.gateway: Gateway | None = None
        self.incumbent_scores = MetaScores()
        self.round_log: Any = self.log
        self.started: dict[int, float] = {}
        self.begun = {e["round"] for e in events if e["type"] == "round_start"}

    def save_candidate(self, source: str) -> None:
        self.run.write_candidate(source)

    # ---- the steps, in the order the loop takes them

    def begin(self, t: int, incumbent: str) -> None:
        self.round_log = self.log.bind(round=t)
        self.gateway = Gateway(self.model, recorder=self.round_log, recorded=self.recorded,
                               caps=self.caps)
        self.context = RunContext(sandbox=self.sandbox, gateway=self.gateway,
                                  recorder=self.round_log, jobs=self.cfg.jobs, memo=self.memo,
                                  save_source=self.save_candidate)
        self.meta = MetaUtility(self.context, self.base, n_tests=self.cfg.n_tests,
                                budget=self.budget, use_sandbox_param=self.flag)
        self.self_improvement = ImproverRun(self.context, self.cfg.self_improvement_budget(),
                                            f"s{self.cfg.seed}/r{t}/self",
                                            use_sandbox_param=self.flag)
        self.save_candidate(incumbent)
        self.incumbent_hash = source_hash(incumbent)
        self.started[t] = time.time()
        self.phase(t, "self-improvement")
        if t not in self.begun:  # a resumed round keeps its first round_start
            self.log.record("round_start", round=t, incumbent_hash=source_hash(incumbent))

    def phase(self, t: int, name: str) -> None:
        self.listener({"type": "phase", "round": t, "phase": name})

    def meta_utility(self, t: int) -> HostUtility:
        return self.meta.as_utility(self.self_improvement.scope)

    def language_model(self, t: int) -> LanguageModel:
        return self.self_improvement.language_model()

    def improve(self, improver: str, utility: HostUtility, lm: LanguageModel) -> str:
        outcome = self.self_improvement.run(improver, initial_solution=improver,
                                            description=self.description, utility=utility, lm=lm)
        self.save_candidate(outcome.returned)
        return outcome.returned

    def evaluate(self, t: int, who: str, improver: str) -> MetaScores:
        h = source_hash(improver)
        val = self.evaluations.get((t, who, "val", h))
        test = self.evaluations.get((t, who, "test", h))
        if val is not None and test is not None:
            scores = MetaScores(val=list(val["scores"]), test=list(test["scores"]),
                                fallbacks=list(val.get("fallbacks", [])))
            if who == "incumbent":
                self.incumbent_scores = scores
            return scores
        if who == "candidate" and h == self.incumbent_hash:
            scores, note = self.incumbent_scores, "the incumbent's scores: same source"
        else:
            self.phase(t, f"re-evaluating the {who}")
            scores, note = self.meta.evaluate(improver, f"s{self.cfg.seed}/r{t}/eval/{who}-{h}"), ""
        if val is not None:  # killed between the two writes: the logged val split stands
            scores = MetaScores(val=list(val["scores"]), test=scores.test,
                                fallbacks=list(val.get("fallbacks", [])))
        for split, values in (("val", scores.val), ("test", scores.test)):  # the tee logs each once
            self.round_log.record("evaluation", who=who, split=split, scores=values,
                                  mean=sum(values) / len(values), candidate_hash=h,
                                  fallbacks=scores.fallbacks, **({"note": note} if note else {}))
        if who == "incumbent":
            self.incumbent_scores = scores
        return scores

    def decide(self, incumbent: str, candidate: str, old: MetaScores,
               new: MetaScores) -> tuple[bool, str]:
        if source_hash(candidate) == source_hash(incumbent):
            return False, "the improver returned itself unchanged"
        if new.fallbacks and all(new.fallbacks):
            # Its scores are those of the unchanged seed solution: any edge is noise.
            return False, f"the candidate never returned a solution ({new.fallbacks[0]})"
        c = improvement_test(old.val, new.val, self.cfg.margin, alpha=self.cfg.alpha)
        return c.better, c.reason

    def end(self, t: int, incumbent: str, candidate: str, adopted: bool, reason: str,
            old: MetaScores, new: MetaScores) -> None:
        events = [e for e in self.run.iter_events(("model_call", "audit_finding", "round_start"))
                  if e.get("round") == t]
        used = usage(events)
        self.run.write_improver(t, incumbent)
        self.log.record(
            "round_end", round=t, adopted=adopted, reason=reason,
            incumbent_hash=self.incumbent_hash, candidate_hash=source_hash(candidate),
            kept_hash=source_hash(incumbent),
            incumbent=_scores(old), candidate=_scores(new),
            model_calls=used.calls, cached_calls=used.cached, tokens=used.tokens,
            cost_usd=None if used.cost_usd is None else round(used.cost_usd, 6),
            wall_s=round(time.time() - self.first_start(t, events), 3),
            findings=sum(1 for e in events if e["type"] == "audit_finding"))
        write_summary(self.run)

    def first_start(self, t: int, events: list[dict]) -> float:
        starts = [e["ts"] for e in events if e["type"] == "round_start"]
        return min(starts) if starts else self.started.get(t, time.time())


def _scores(s: MetaScores) -> dict[str, Any]:
    return {"val": s.val_mean, "test": s.test_mean, "val_scores": s.val, "test_scores": s.test}


def execute(run: Run, cfg: RunConfig, *, model: Any, sandbox: Any, listener: Any = None,
            pin: list[dict] | None = None) -> str:
    """Run (or resume) the rounds of `run`; log run_end with how it ended; return the incumbent.

    One process at a time: a run owned by another raises RunBusy naming its pid.
    `pin`: the events of a run being replayed (see `Memo`).
    """
    with run.owned():
        return _execute(run, cfg, model=model, sandbox=sandbox, listener=listener, pin=pin)


def _execute(run: Run, cfg: RunConfig, *, model: Any, sandbox: Any, listener: Any,
             pin: list[dict] | None) -> str:
    done = finished_rounds(run)
    if not run.improver_path(0).exists():
        run.write_improver(0, load_task(cfg.seed_improver).seed_source)
    last = max(done, default=0)
    incumbent = run.read_improver(last)
    rounds = Rounds(run, cfg, model=model, sandbox=sandbox, listener=listener, pin=pin)
    if done or next(run.iter_events("run_start"), None) is not None:
        rounds.log.record("run_resume", finished_rounds=done, pid=os.getpid())
    else:
        rounds.log.record("run_start", config=cfg.to_dict(), pid=os.getpid(),
                          schema_version=SCHEMA_VERSION)
    try:
        incumbent = self_improvement(rounds, incumbent, range(last + 1, cfg.rounds + 1))
    except KeyboardInterrupt:
        rounds.log.record("run_end", status="interrupted")
        write_summary(run)
        raise
    except BaseException as e:
        rounds.log.record("run_end", status="failed", error=f"{type(e).__name__}: {e}"[:500])
        write_summary(run)
        raise
    rounds.log.record("run_end", status="finished")
    write_summary(run)
    return incumbent


def new_run(cfg: RunConfig, store: RunStore | None = None) -> Run:
    load_task(cfg.task)
    load_task(cfg.seed_improver)
    return (store or RunStore()).create(cfg.to_dict(), label=Path(cfg.task).name)


def run_config(run: Run) -> RunConfig:
    try:
        return RunConfig.from_dict(run.config())
    except StopError as e:
        raise StopError(f"run {run.id}: {e}") from None
