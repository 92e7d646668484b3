"""Does self-improvement help? K runs of T rounds, then three improvers per run on the test split.

For each run, with fresh budgets and the same number of trials each: `I0`, the seed improver;
`baseline`, a fixed best-of-budget improver (`baseline_improver.py`, run in the sandbox like any
improver) that spends every model call and response on independent rewrites of the seed prompt;
`IT`, the run's final improver (`I0` again when it adopted none). A trial is one improver run on
the base task's seed solution, its returned solution scored on val and test: the meta-utility's
machinery (`MetaUtility`) with n_tests = trials, each trial in its own model-call scope.

The experiment is a run folder of its own: which runs belong to it (`improve_run`), every trial
(`improver_test`, with its model calls and sandbox executions) and each finished arm
(`improve_arm`). Killed at any moment, it resumes without redoing finished rounds, trials or
arms, and logged model calls are served from the log. Where the work runs is an `Executor`:
`LocalExecutor` runs rounds and trials in this process; a Ray executor takes the same two calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stop.core.budget import Budget
from stop.core.config import RunConfig
from stop.core.improver import Memo, RunContext
from stop.core.loop import execute, new_run, run_config
from stop.core.meta import MetaScores, MetaUtility, meta_setup
from stop.errors import StopError
from stop.experiments.proposals import judge_proposals, proposals_of
from stop.experiments.session import ending
from stop.experiments.transfer import final_round
from stop.models import resolve_model
from stop.models.base import Model, ModelReply, ModelRequest
from stop.models.caps import SpendingCaps
from stop.models.gateway import Gateway
from stop.runs.replay import recorded_replies
from stop.runs.store import Run, RunStore, StoreError
from stop.runs.summary import finished_rounds, run_status
from stop.sandbox import Sandbox, open_sandbox
from stop.sandbox.records import source_hash
from stop.tasks.loader import load_task

ARMS = ("I0", "baseline", "IT")
ARM_LABELS = {"I0": "I_0 (seed improver)", "baseline": "best-of-budget baseline",
              "IT": "I_T (final improver)"}
BASELINE_FILE = Path(__file__).with_name("baseline_improver.py")
# Settings a resumed experiment may change; every other one must stay as it started.
MAY_CHANGE = ("runs", "trials", "max_cost", "jobs", "judge")


class ImproveError(StopError):
    """The experiment cannot start or resume as asked."""


def baseline_source() -> str:
    return BASELINE_FILE.read_text(encoding="utf-8")


@dataclass
class ImproveConfig:
    """The experiment's settings; stored as its config.json."""

    task: str = "parity_noise"
    seed_improver: str = "meta_optimization"
    runs: int = 3
    rounds: int | None = None  # None: the profile's
    model: str | None = None
    api_base: str | None = None
    profile: str = "local"
    trials: int = 3
    judge: str | None = None
    seed: int = 0
    jobs: int = 2
    sandbox: str = "docker"
    max_cost: float | None = None
    from_runs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": "improve", **asdict(self)}

    def run_config(self, index: int, experiment_id: str) -> RunConfig:
        """The settings of the experiment's run `index` (its seed is seed + index)."""
        cfg = RunConfig.from_profile(self.profile, task=self.task, seed_improver=self.seed_improver,
                                     model=self.model, api_base=self.api_base, rounds=self.rounds,
                                     seed=self.seed + index, jobs=self.jobs, sandbox=self.sandbox)
        cfg.extra = {"experiment": experiment_id, "index": index}
        return cfg

    def validate(self) -> None:
        if self.trials < 1 or self.jobs < 1:
            raise ImproveError("--trials and --jobs must be at least 1")
        if not self.from_runs and self.runs < 1:
            raise ImproveError("--runs must be at least 1")
        if self.max_cost is not None and self.max_cost <= 0:
            raise ImproveError("--max-cost must be a positive number of dollars")
        self.run_config(0, "check").validate()


@dataclass(frozen=True)
class ArmSpec:
    """One arm of one run: `trials` improver runs of `source` on `task` with `budget` each."""

    run_id: str
    arm: str
    source: str
    task: str
    budget: Budget
    trials: int
    use_sandbox_param: bool = False

    @property
    def improver_hash(self) -> str:
        return source_hash(self.source)

    @property
    def scope(self) -> str:
        return f"improve/{self.run_id}/{self.arm}-{self.improver_hash[:12]}"


class Executor(Protocol):
    """Where the experiment's work runs: the rounds of one run, the trials of one arm."""

    def rounds(self, run: Run, cfg: RunConfig) -> None: ...

    def arm(self, spec: ArmSpec) -> MetaScores: ...


class CostCap(Model):
    """The experiment's model under its --max-cost: the cap holds across every run, round and
    trial, and across resumes (it starts from what the logs say was spent). Replies served from
    a log or the cache never reach this object, so they cost nothing here either."""

    def __init__(self, inner: Model, caps: SpendingCaps) -> None:
        self.inner, self.caps = inner, caps
        self.name = inner.name
        self.cacheable = inner.cacheable
        self.recorded = inner.recorded
        self.recorded_only = inner.recorded_only
        caps.require_price(inner)

    @property
    def key_name(self) -> str:
        return self.inner.key_name

    def price_known(self) -> bool:
        return self.inner.price_known()

    def complete(self, req: ModelRequest) -> ModelReply:
        self.caps.check()
        reply = self.inner.complete(req)
        self.caps.charge(reply)
        return reply

    def close(self) -> None:
        self.inner.close()


class LocalExecutor:
    """Rounds and trials in this process; containers on this machine's engine."""

    def __init__(self, experiment: Run, *, model: Model, sandbox: Sandbox, jobs: int,
                 display: Callable[[Run, RunConfig], Any] | None = None) -> None:
        self.experiment, self.model, self.sandbox, self.jobs = experiment, model, sandbox, jobs
        self.display = display
        events = list(experiment.iter_events(("utility_call", "improver_test", "model_call")))
        self.memo = Memo(events)
        self.recorded = recorded_replies(events)

    def rounds(self, run: Run, cfg: RunConfig) -> None:
        with (self.display(run, cfg) if self.display else nullcontext(None)) as listener:
            execute(run, cfg, model=self.model, sandbox=self.sandbox, listener=listener)

    def arm(self, spec: ArmSpec) -> MetaScores:
        recorder = self.experiment.recorder(phase="evaluation", arm=spec.arm,
                                            source_run=spec.run_id)
        gateway = Gateway(self.model, recorder=recorder, recorded=self.recorded)
        context = RunContext(sandbox=self.sandbox, gateway=gateway, recorder=recorder,
                             jobs=self.jobs, memo=self.memo,
                             save_source=self.experiment.write_candidate)
        meta = MetaUtility(context, load_task(spec.task), n_tests=spec.trials, budget=spec.budget,
                           use_sandbox_param=spec.use_sandbox_param)
        return meta.evaluate(spec.source, spec.scope)



# ---------------------------------------------------------------- the experiment run


def open_experiment(store: RunStore, cfg: ImproveConfig, ref: str | None) -> Run:
    """A new experiment run, or the one `ref` names (its fixed settings must match)."""
    if ref is None:
        cfg.validate()
        return store.create(cfg.to_dict(), label="improve")
    exp = store.open(ref)
    old = exp.config()
    if old.get("experiment") != "improve":
        raise ImproveError(f"run {exp.id} is not an improve experiment")
    return exp


def resumed_config(exp: Run, given: dict[str, Any]) -> ImproveConfig:
    """The experiment's stored settings, with the ones a resume may change taken from `given`."""
    old = exp.config()
    if old.pop("experiment", None) != "improve":
        raise ImproveError(f"run {exp.id} is not an improve experiment")
    fixed = [k for k, v in given.items() if v is not None and k not in MAY_CHANGE
             and old.get(k) != v]
    if fixed:
        raise ImproveError(f"experiment {exp.id} was started with "
                           + ", ".join(f"{k}={old.get(k)!r}" for k in fixed)
                           + f"; a resume may change only {', '.join(MAY_CHANGE)}")
    try:
        cfg = ImproveConfig(**old)
    except TypeError as e:
        raise ImproveError(f"experiment {exp.id}: config.json is malformed ({e})") from None
    for k in MAY_CHANGE:
        if given.get(k) is not None:
            setattr(cfg, k, given[k])
    cfg.validate()
    exp.write_config(cfg.to_dict())
    return cfg


def member_runs(exp: Run, store: RunStore) -> dict[int, Run]:
    """The experiment's runs by index: those its log names, and any it created but was killed
    before naming (found by the experiment id in their config)."""
    out: dict[int, Run] = {}
    for e in exp.iter_events("improve_run"):
        out[int(e["index"])] = store.open(e["run_id"])
    for run in store.list():
        try:
            extra = (run.config().get("extra") or {}) if run.id != exp.id else {}
        except StoreError:
            continue
        if isinstance(extra, dict) and extra.get("experiment") == exp.id \
                and int(extra.get("index", -1)) not in out:
            out[int(extra["index"])] = run  # found again on every read: nothing is written
    return dict(sorted(out.items()))


def spent_caps(exp: Run, runs: Iterable[Run], max_cost: float | None) -> SpendingCaps:
    events = [e for r in (exp, *runs) for e in r.iter_events(("model_call", "model_retry",
                                                                "model_error"))]
    return SpendingCaps.of_run(events, run_id=exp.id, max_tokens_total=None, max_cost_usd=max_cost)


def arm_specs(run: Run, trials: int) -> list[ArmSpec]:
    """The three arms of one run: its seed improver, the baseline, its final improver."""
    cfg = run.config()
    budget = Budget.of_run(cfg)
    seed_task = load_task(str(cfg.get("seed_improver") or "meta_optimization"))
    flag = meta_setup(seed_task)[3]
    seed = run.read_improver(0) if run.improver_path(0).exists() else seed_task.seed_source
    final = run.read_improver(final_round(run))
    task = str(cfg.get("task") or "parity_noise")
    return [ArmSpec(run.id, arm, src, task, budget, trials, flag)
            for arm, src in (("I0", seed), ("baseline", baseline_source()), ("IT", final))]


def arm_done(exp: Run, spec: ArmSpec) -> dict[str, Any] | None:
    key = (spec.run_id, spec.arm, spec.improver_hash)
    return next((e for e in reversed(exp.events("improve_arm")) if len(e["test"]) >= spec.trials
                 and (e["source_run"], e["arm"], e["improver_hash"]) == key), None)


def run_improve(cfg: ImproveConfig | None, *, store: RunStore | None = None,
                resume: str | None = None, given: dict[str, Any] | None = None,
                model: Model | None = None, sandbox: Sandbox | None = None,
                executor: Executor | None = None, progress: Callable[[str], None] | None = None,
                display: Callable[[Run, RunConfig], Any] | None = None) -> Run:
    """Run (or resume) the experiment to the end; returns its run. See the module docstring."""
    store = store or RunStore()
    say = progress or (lambda line: None)
    if resume is not None:
        exp = open_experiment(store, ImproveConfig(), resume)
        cfg = resumed_config(exp, given or {})
    else:
        assert cfg is not None
        runs = [store.open(r) for r in cfg.from_runs]
        if runs:
            check_from(cfg, runs)
        exp = open_experiment(store, cfg, None)
        for i, r in enumerate(runs):
            where = r.id if r.dir.parent.resolve() == store.root.resolve() else str(r.dir)
            exp.recorder().record("improve_run", index=i, run_id=where)
    members = member_runs(exp, store)
    if not pending(exp, cfg, members):
        return exp
    with exp.owned():  # one process drives an experiment at a time
        _drive(exp, cfg, store, members, model=model, sandbox=sandbox, executor=executor,
               say=say, display=display, resumed=resume is not None)
    return exp


def _drive(exp: Run, cfg: ImproveConfig, store: RunStore, members: dict[int, Run], *,
           model: Model | None, sandbox: Sandbox | None, executor: Executor | None,
           say: Callable[[str], None], display: Callable[[Run, RunConfig], Any] | None,
           resumed: bool) -> None:
    log = exp.recorder()
    log.record("run_start", config=cfg.to_dict(), resumed=resumed)
    say(f"experiment {exp.id}: if interrupted, continue with "
        f"`stop experiment improve --resume {exp.id}`")
    caps = spent_caps(exp, members.values(), cfg.max_cost)
    with ending(log) as own:
        model = CostCap(model or own(resolve_model(cfg.model, api_base=cfg.api_base)), caps)
        sandbox = sandbox or own(open_sandbox(cfg.sandbox))
        ex = executor or LocalExecutor(exp, model=model, sandbox=sandbox, jobs=cfg.jobs,
                                       display=display)
        count = len(cfg.from_runs) or cfg.runs
        for k in range(count):
            if k not in members:
                created = new_run(cfg.run_config(k, exp.id), store)
                log.record("improve_run", index=k, run_id=created.id, seed=cfg.seed + k)
                members[k] = created
            run = members[k]
            if cfg.from_runs:
                continue
            rcfg = run_config(run)
            if len(finished_rounds(run)) < rcfg.rounds or run_status(run.iter_events()) != "finished":
                say(f"run {k + 1}/{count} {run.id}: {rcfg.rounds} round(s)")
                ex.rounds(run, rcfg)
        for k in range(count):
            _evaluate(exp, ex, members[k], cfg.trials, say)
        if cfg.judge:
            judge = CostCap(own(resolve_model(cfg.judge)), caps)
            judge_proposals(exp, judge, [members[k] for k in range(count)], say)


def pending(exp: Run, cfg: ImproveConfig, members: dict[int, Run]) -> bool:
    """Whether anything is left to do: a run to start or finish, an arm, a judge's label."""
    count = len(cfg.from_runs) or cfg.runs
    if any(k not in members for k in range(count)):
        return True
    runs = [members[k] for k in range(count)]
    if not cfg.from_runs and any(run_status(r.iter_events()) != "finished" for r in runs):
        return True
    if any(arm_done(exp, s) is None for r in runs for s in arm_specs(r, cfg.trials)):
        return True
    labelled = {e["candidate_hash"] for e in exp.iter_events("judge_label")}
    return bool(cfg.judge) and any(p["parsed"] and p["hash"] not in labelled
                                   for r in runs for p in proposals_of(r))


def check_from(cfg: ImproveConfig, runs: list[Run]) -> None:
    tasks = {str(r.config().get("task")) for r in runs}
    if len(tasks) > 1:
        raise ImproveError(f"--from runs are on different tasks ({', '.join(sorted(tasks))})")
    if len({r.id for r in runs}) != len(runs):
        raise ImproveError("--from names the same run twice")
    for r in runs:
        if r.config().get("experiment") is not None:
            raise ImproveError(f"run {r.id} is an experiment, not a self-improvement run")
        final_round(r)
    cfg.task = tasks.pop()
    models = {r.config().get("model") for r in runs}
    if cfg.model is None:
        if len(models) > 1:
            raise ImproveError("--from runs used different models; pass --model for the trials")
        cfg.model = models.pop()
        cfg.api_base = cfg.api_base or runs[0].config().get("api_base")
    cfg.from_runs = [r.id for r in runs]
    cfg.runs = len(runs)


def _evaluate(exp: Run, ex: Executor, run: Run, trials: int, say: Callable[[str], None]) -> None:
    specs = arm_specs(run, trials)
    done: dict[str, dict[str, Any]] = {}
    for spec in specs:
        found = arm_done(exp, spec)
        if found is None and spec.arm == "IT" and spec.improver_hash == specs[0].improver_hash:
            # The run adopted nothing: I_T is I_0, and its trials are I_0's.
            i0 = done["I0"]
            found = {"source_run": run.id, "arm": "IT", "improver_hash": spec.improver_hash,
                     "test": i0["test"], "val": i0["val"], "trials": trials,
                     "fallbacks": i0.get("fallbacks", 0), "same_as": "I0"}
            exp.recorder().record("improve_arm", **found)
        if found is None:
            say(f"{run.id}: {spec.arm}, {trials} trial(s) on the test split")
            scores = ex.arm(spec)
            found = {"source_run": run.id, "arm": spec.arm, "improver_hash": spec.improver_hash,
                     "test": scores.test, "val": scores.val, "trials": trials,
                     "fallbacks": sum(1 for f in scores.fallbacks if f)}
            exp.recorder().record("improve_arm", **found)
        done[spec.arm] = found
