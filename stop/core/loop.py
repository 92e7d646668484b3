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
from stop.core.improver import (
    Budget,
    Host,
    HostUtility,
    Memo,
    MetaScores,
    MetaUtility,
    meta_description,
    run_improver_outcome,
)
from stop.core.stats import improvement_test
from stop.errors import StopError
from stop.models.gateway import Gateway, LanguageModel
from stop.runs.store import Run, RunStore
from stop.sandbox.records import ExecLimits, source_hash
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


class EventTee:
    """A recorder that writes to the run's log and shows each event to a listener.

    Model calls already in the log (served again from it on resume) are shown, not rewritten.
    """

    def __init__(self, inner: Any, listener: Any = None, logged_keys: set[str] | None = None) -> None:
        self.inner, self.listener = inner, listener
        self.logged_keys = logged_keys if logged_keys is not None else set()

    def bind(self, **context: Any) -> EventTee:
        return EventTee(self.inner.bind(**context), self.listener, self.logged_keys)

    def record(self, type: str, **fields: Any) -> None:
        if not (type == "model_call" and fields.get("key") in self.logged_keys):
            self.inner.record(type, **fields)
        if self.listener is not None:
            self.listener({"type": type, **getattr(self.inner, "context", {}), **fields})

    def finding(self, finding: Any) -> None:
        self.inner.finding(finding)
        if self.listener is not None:
            self.listener({"type": "audit_finding", "finding": finding.to_dict()})


class Rounds:
    """The steps of `self_improvement` for one run on disk."""

    def __init__(self, run: Run, cfg: RunConfig, *, model: Any, sandbox: Any,
                 listener: Any = None, pin: list[dict] | None = None) -> None:
        self.run, self.cfg, self.model, self.sandbox = run, cfg, model, sandbox
        self.listener = listener or (lambda event: None)
        events = run.events()
        self.memo = Memo(events) if pin is None else Memo(pin, pinned=True)
        self.evaluations = {(e["round"], e["who"], e["split"], e["candidate_hash"]): e
                            for e in events if e.get("type") == "evaluation"}
        calls = [e for e in events if e.get("type") == "model_call" and e.get("key")]
        self.recorded = {e["key"]: e for e in calls if "texts" in e}
        self.log = EventTee(run.recorder(), self.listener, set(self.recorded))
        # A replay model brings another run's calls: served like this run's own, but logged.
        self.recorded = {**getattr(model, "recorded", {}), **self.recorded}
        self.base = load_task(cfg.task)
        meta_task = load_task(cfg.seed_improver)
        self.flag = bool(meta_task.settings.get("use_sandbox_param", False))
        self.budget = Budget(cfg.lm_budget, cfg.max_responses_per_call, cfg.utility_budget,
                             cfg.max_tokens, cfg.improver_wall_s)
        self.description = meta_description(
            meta_task.description, base_task=self.base, n_tests=cfg.n_tests, base=self.budget,
            meta_utility_calls=cfg.meta_utility_budget)
        self.gateway: Gateway | None = None
        self.incumbent_scores = MetaScores()
        self.round_log: Any = self.log
        self.started: dict[int, float] = {}
        self.begun = {e["round"] for e in events if e.get("type") == "round_start"}

    def save_candidate(self, source: str) -> None:
        self.run.write_candidate(source)

    # ---- the steps, in the order the loop takes them

    def begin(self, t: int, incumbent: str) -> None:
        self.round_log = self.log.bind(round=t)
        self.gateway = Gateway(self.model, recorder=self.round_log, recorded=self.recorded)
        self.host = Host(sandbox=self.sandbox, gateway=self.gateway, recorder=self.round_log,
                         jobs=self.cfg.jobs, memo=self.memo, save_source=self.save_candidate)
        self.meta = MetaUtility(self.host, self.base, n_tests=self.cfg.n_tests,
                                budget=self.budget, use_sandbox_param=self.flag)
        self.save_candidate(incumbent)
        self.incumbent_hash = source_hash(incumbent)
        self.started[t] = time.time()
        self.phase(t, "self-improvement")
        if t not in self.begun:  # a resumed round keeps its first round_start
            self.log.record("round_start", round=t, incumbent_hash=source_hash(incumbent))

    def phase(self, t: int, name: str) -> None:
        self.listener({"type": "phase", "round": t, "phase": name})

    def meta_utility(self, t: int) -> HostUtility:
        return self.meta.as_utility(f"s{self.cfg.seed}/r{t}/self")

    def language_model(self, t: int) -> LanguageModel:
        assert self.gateway is not None
        return LanguageModel(self.gateway, budget=self.cfg.meta_lm_budget,
                             max_responses_per_call=self.cfg.meta_max_responses_per_call,
                             scope=f"s{self.cfg.seed}/r{t}/self/lm", max_tokens=self.cfg.max_tokens)

    def improve(self, improver: str, utility: HostUtility, lm: LanguageModel) -> str:
        outcome = run_improver_outcome(
            improver, initial_solution=improver, description=self.description,
            utility_fn=utility, lm=lm, sandbox=self.sandbox, recorder=self.round_log,
            limits=ExecLimits(wall_s=self.cfg.self_improve_wall_s),
            use_sandbox_param=self.flag, utility_budget=self.cfg.meta_utility_budget)
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
        for split, values in (("val", scores.val), ("test", scores.test)):
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
        events = [e for e in self.run.events() if e.get("round") == t]
        calls = [e for e in events if e.get("type") == "model_call"]
        fresh = [e for e in calls if not e.get("cached")]
        self.run.write_improver(t, incumbent)
        self.log.record(
            "round_end", round=t, adopted=adopted, reason=reason,
            incumbent_hash=self.incumbent_hash, candidate_hash=source_hash(candidate),
            kept_hash=source_hash(incumbent),
            incumbent=_scores(old), candidate=_scores(new),
            model_calls=len(fresh), cached_calls=len(calls) - len(fresh),
            tokens=sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0) for e in fresh),
            cost_usd=round(sum(e.get("cost_usd", 0.0) for e in fresh), 6),
            wall_s=round(time.time() - self.first_start(t, events), 3),
            findings=sum(1 for e in events if e.get("type") == "audit_finding"))
        self.run.write_json("summary.json", summarize(self.run))

    def first_start(self, t: int, events: list[dict]) -> float:
        starts = [e["ts"] for e in events if e.get("type") == "round_start"]
        return min(starts) if starts else self.started.get(t, time.time())


def _scores(s: MetaScores) -> dict[str, Any]:
    return {"val": s.val_mean, "test": s.test_mean, "val_scores": s.val, "test_scores": s.test}


def finished_rounds(run: Run) -> list[int]:
    return sorted({e["round"] for e in run.events("round_end")})


def execute(run: Run, cfg: RunConfig, *, model: Any, sandbox: Any, listener: Any = None,
            pin: list[dict] | None = None) -> str:
    """Run (or resume) the rounds of `run`; log run_end with how it ended; return the incumbent.

    `pin`: the events of a run being replayed (see `Memo`).
    """
    done = finished_rounds(run)
    if not run.improver_path(0).exists():
        run.write_improver(0, load_task(cfg.seed_improver).seed_source)
    last = max(done, default=0)
    incumbent = run.read_improver(last)
    rounds = Rounds(run, cfg, model=model, sandbox=sandbox, listener=listener, pin=pin)
    if done or run.events("run_start"):
        rounds.log.record("run_resume", finished_rounds=done, pid=os.getpid())
    else:
        rounds.log.record("run_start", config=cfg.to_dict(), pid=os.getpid())
    try:
        incumbent = self_improvement(rounds, incumbent, range(last + 1, cfg.rounds + 1))
    except KeyboardInterrupt:
        rounds.log.record("run_end", status="interrupted")
        run.write_json("summary.json", summarize(run))
        raise
    except BaseException as e:
        rounds.log.record("run_end", status="failed", error=f"{type(e).__name__}: {e}"[:500])
        run.write_json("summary.json", summarize(run))
        raise
    rounds.log.record("run_end", status="finished")
    run.write_json("summary.json", summarize(run))
    return incumbent


def summarize(run: Run) -> dict[str, Any]:
    """What `stop runs` and `stop show` print, rebuilt from the log (works for killed runs too)."""
    cfg = run.config()
    events = run.events()
    ends = {e["round"]: e for e in events if e.get("type") == "round_end"}
    run_end = [e for e in events if e.get("type") == "run_end"]
    starts = [e["ts"] for e in events if "ts" in e]
    calls = [e for e in events if e.get("type") == "model_call" and not e.get("cached")]
    rows = []
    best: dict[str, Any] = {"val": None, "test": None, "round": None}
    for t in sorted(ends):
        e = ends[t]
        kept = e["candidate"] if e["adopted"] else e["incumbent"]
        rows.append({k: e.get(k) for k in ("round", "adopted", "reason", "incumbent_hash",
                                           "candidate_hash", "kept_hash", "incumbent", "candidate",
                                           "model_calls", "cached_calls", "tokens", "cost_usd",
                                           "wall_s", "findings")})
        if best["val"] is None or kept["val"] > best["val"]:
            best = {"val": kept["val"], "test": kept["test"], "round": t}
    status = run_status(events)
    return {
        "id": run.id, "task": cfg.get("task"), "model": cfg.get("model") or "embedded",
        "profile": cfg.get("profile"), "rounds": cfg.get("rounds"), "rounds_done": len(ends),
        "status": status, "error": run_end[-1].get("error") if run_end else None,
        "best": best, "round_table": rows,
        "model_calls": len(calls),
        "tokens": sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0) for e in calls),
        "cost_usd": round(sum(e.get("cost_usd", 0.0) for e in calls), 6),
        "findings": sum(1 for e in events if e.get("type") == "audit_finding"),
        "started": min(starts) if starts else None,
        "duration_s": round(max(starts) - min(starts), 3) if starts else None,
    }


def run_status(events: list[dict]) -> str:
    """finished | interrupted | failed from the last run_end; otherwise running while the
    process that started or resumed the run is alive, killed when it is gone."""
    status = "created"
    pid = None
    for e in events:
        if e.get("type") in ("run_start", "run_resume"):
            status, pid = "running", e.get("pid")
        elif e.get("type") == "run_end":
            status, pid = e.get("status", "failed"), None
    if status == "running" and not _alive(pid):
        status = "killed"
    return status


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def compare_replay(original: Any, replayed: Any,
                 tolerance: float) -> tuple[int, int, list[str]]:
    """(scores compared, scores identical, differences) between a run and its replay."""
    def scores(run: Any) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for e in run.events():
            if e.get("type") == "evaluation":
                for i, v in enumerate(e["scores"]):
                    out[("evaluation", e["round"], e["who"], e["split"],
                         e["candidate_hash"], i)] = v
            elif e.get("type") == "improver_test":
                out[("improver_test", e["scope"], "val")] = e["val"]
                out[("improver_test", e["scope"], "test")] = e["test"]
            elif e.get("type") == "utility_call":
                out[("utility", e["scope"], e["solution_hash"], e["occurrence"])] = e["value"]
        return out

    diffs: list[str] = []
    a, b = scores(original), scores(replayed)
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
    ends_a = {e["round"]: e for e in original.events("round_end")}
    ends_b = {e["round"]: e for e in replayed.events("round_end")}
    for t in sorted(set(ends_a) | set(ends_b)):
        ea, eb = ends_a.get(t, {}), ends_b.get(t, {})
        for k in ("adopted", "candidate_hash", "kept_hash"):
            if ea.get(k) != eb.get(k):
                diffs.append(f"round {t} {k}: recorded {ea.get(k)}, replay {eb.get(k)}")
    return len(a), same, diffs


def new_run(cfg: RunConfig, store: RunStore | None = None) -> Run:
    load_task(cfg.task)
    load_task(cfg.seed_improver)
    return (store or RunStore()).create(cfg.to_dict(), label=Path(cfg.task).name)


def run_config(run: Run) -> RunConfig:
    try:
        return RunConfig.from_dict(run.config())
    except StopError as e:
        raise StopError(f"run {run.id}: {e}") from None
