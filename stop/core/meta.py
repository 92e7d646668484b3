"""The meta-utility Û: how good an improver is, by how well what it returns scores on a task.

Û(I) runs improver I `n_tests` times on the base task's seed solution, each run an
`ImproverRun` with fresh budgets, and averages the hidden val score of what the runs return;
the test score of the same returns is kept for reporting. Threat model: as for every improver
run (see `stop.core.improver`): the improver runs only in the sandbox and its returns are data,
scored on the host. Resume: each finished test run is one `improver_test` event, reused from the
`Memo` instead of run again.
"""

from __future__ import annotations

import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from stop.core.budget import PAPER, Budget
from stop.core.improver import HostUtility, ImproverRun, RunContext, SandboxFailure
from stop.core.stats import mean_ci
from stop.models import Model, resolve_model
from stop.models.gateway import Gateway
from stop.runs.recorders import NullRecorder
from stop.sandbox import Sandbox
from stop.sandbox.records import source_hash
from stop.tasks.loader import Task, TaskError, load_task
from stop.tasks.scoring import InstanceOutcome, ScoreReport, score_solution


@dataclass
class MetaScores:
    """One meta-utility evaluation: per-run val and test scores of what the improver returned."""

    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # why each run fell back ("" if not)

    @property
    def val_mean(self) -> float:
        return sum(self.val) / len(self.val) if self.val else 0.0

    @property
    def test_mean(self) -> float:
        return sum(self.test) / len(self.test) if self.test else 0.0


class MetaUtility:
    """Û(I): run improver I `n_tests` times on the base task's seed solution, each run with a
    fresh model and utility budget, and average the hidden val score of what it returns (the
    test score of the same returns is kept for reporting)."""

    def __init__(self, context: RunContext, base_task: Task, *, n_tests: int, budget: Budget,
                 use_sandbox_param: bool = False) -> None:
        if base_task.kind != "solve":
            raise TaskError(f"the meta-utility needs a solve task as its base, got {base_task.name} "
                            f"({base_task.kind})")
        self.context, self.base, self.n_tests, self.budget = context, base_task, n_tests, budget
        self.use_sandbox_param = use_sandbox_param

    def score_solution(self, source: str, split: str) -> float:
        with self.context.slots:
            report = score_solution(self.base, source, split=split, sandbox=self.context.sandbox,
                                    recorder=self.context.recorder)
        if report.exec_status == "error":
            raise SandboxFailure(f"the sandbox failed to run a solution of {self.base.name}")
        return float(report.score)

    def evaluate(self, improver_source: str, scope: str) -> MetaScores:
        if self.context.save_source is not None:
            self.context.save_source(improver_source)
        workers = min(self.context.jobs, self.n_tests)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="meta")
        try:
            futures = [pool.submit(self.run_test, improver_source, f"{scope}/t{i}")
                       for i in range(self.n_tests)]
            runs = [f.result() for f in futures]
        finally:  # on Ctrl-C or an error, do not wait for runs nobody will read
            pool.shutdown(wait=False, cancel_futures=True)
        return MetaScores(val=[r["val"] for r in runs], test=[r["test"] for r in runs], runs=runs,
                          fallbacks=[r["reason"] if r["fallback"] else "" for r in runs])

    def run_test(self, improver_source: str, scope: str) -> dict:
        h = source_hash(improver_source)
        done = self.context.memo.tests.get(scope)
        if done is not None and done.get("candidate_hash") == h:
            return done
        run = ImproverRun(self.context, self.budget, scope,
                          use_sandbox_param=self.use_sandbox_param)
        utility = run.utility(lambda source: self.score_solution(source, "val"), self.base.name)
        outcome = run.run(improver_source, initial_solution=self.base.seed_source,
                          description=self.base.description, utility=utility)
        val = self.score_solution(outcome.returned, "val")
        test = self.score_solution(outcome.returned, "test")
        record = {"scope": scope, "candidate_hash": h, "val": val, "test": test,
                  "returned_hash": source_hash(outcome.returned), "fallback": outcome.fallback,
                  "reason": outcome.reason, "status": outcome.status}
        self.context.recorder.record("improver_test", **record)
        return record

    def as_utility(self, scope: str) -> HostUtility:
        """Û as the utility an improver calls when it improves improvers (logged, memoised)."""

        def score(source: str, call_scope: str) -> dict[str, float]:
            s = self.evaluate(source, call_scope)
            return {"value": s.val_mean, "test": s.test_mean}

        return HostUtility(self.context, scope, score, "meta")


def meta_description(template: str, *, base_task: Task, n_tests: int, base: Budget,
                     meta_utility_calls: int) -> str:
    """The meta task's model-visible description with this run's budgets filled in."""
    return string.Template(template).safe_substitute(
        base_task=base_task.name, base_summary=base_task.summary or base_task.name,
        n_tests=n_tests, base_lm_calls=base.lm_calls, base_responses=base.responses_per_call,
        base_utility_calls=base.utility_calls, budget=meta_utility_calls)


def meta_setup(task: Task) -> tuple[Task, int, Budget, bool]:
    """(base task, n_tests, per-run budget, use_sandbox_param) from a meta task's settings."""
    s = task.settings
    try:
        base = load_task(str(s.get("base_task", "parity_noise")))
        n_tests = int(s.get("n_tests", 5))
        budget = Budget(lm_calls=int(s.get("base_lm_calls", PAPER.lm_calls)),
                        responses_per_call=int(s.get("base_responses_per_call",
                                                     PAPER.responses_per_call)),
                        utility_calls=int(s.get("base_utility_calls", PAPER.utility_calls)),
                        max_tokens=int(s.get("max_tokens", PAPER.max_tokens)),
                        wall_s=float(s.get("improver_wall_s", PAPER.wall_s)))
    except (TypeError, ValueError) as e:
        raise TaskError(f"task {task.name}: bad [settings] value ({e})") from None
    return base, n_tests, budget, bool(s.get("use_sandbox_param", False))


def score_meta(task: Task, source: str, *, split: str = "val", sandbox: Sandbox,
               recorder: NullRecorder | None = None, model: Model | None = None,
               jobs: int = 2) -> ScoreReport:
    """Û of one improver source on a meta task, as a ScoreReport (one outcome per test run).

    The report's findings are those the recorder collected (a fresh one when none is given)."""
    if task.kind != "meta":
        raise TaskError(f"task {task.name} is a {task.kind} task; score it with score_solution")
    if split not in ("val", "test"):
        raise TaskError(f"unknown split {split!r}; choose val or test")
    recorder = recorder if recorder is not None else NullRecorder()
    base, n_tests, budget, flag = meta_setup(task)
    gateway = Gateway(model if model is not None else resolve_model(None), recorder=recorder)
    context = RunContext(sandbox=sandbox, gateway=gateway, recorder=recorder, jobs=jobs)
    started = time.monotonic()
    h = source_hash(source)
    scores = MetaUtility(context, base, n_tests=n_tests, budget=budget,
                         use_sandbox_param=flag).evaluate(source, f"score/{h}")
    values = scores.val if split == "val" else scores.test
    outcomes = [InstanceOutcome(i, "ok" if not r["fallback"] else "error", float(v),
                                r["reason"] if r["fallback"] else "")
                for i, (r, v) in enumerate(zip(scores.runs, values, strict=True))]
    findings = list(recorder.findings)
    status = "ok" if not any(r["fallback"] for r in scores.runs) else "fallback"
    mean = mean_ci(values)[0] if values else 0.0
    return ScoreReport(task=task.name, split=split, score=mean, outcomes=outcomes,
                       wall_s=time.monotonic() - started, findings=findings, exec_status=status,
                       backend=sandbox.name, candidate_hash=h)
