"""Running improvers in the sandbox, and the meta-utility Û that scores them.

Threat model: an improver is untrusted code, the seed included. It runs as an `improve` job in a
fresh container; its `language_model` and `utility` are stubs whose calls reach this process as
service requests. Every budget is counted here, per improver run: the model-call budget inside
the host-side `LanguageModel`, the utility budget in `run_improver`'s handler. Nothing the
improver does to its stubs changes either. Whatever it returns is only data: if it is not a
string (or the run crashed or hit its deadline), the run counts as returning its input unchanged.

Resume: every utility value and every improver test is logged (`utility_call`,
`improver_test`). A resumed run reads them back into a `Memo` and reuses them instead of running
the same scope again, so the history holds each result once and the run reaches the same state.
"""

from __future__ import annotations

import string
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stop.core.stats import mean_ci
from stop.errors import StopError
from stop.models import resolve_model
from stop.models.base import ModelArgumentError, check_batch_args
from stop.models.gateway import BudgetExceeded, Gateway, LanguageModel
from stop.runs.store import NullRecorder
from stop.sandbox import ServiceError
from stop.sandbox.records import ExecLimits, source_hash
from stop.tasks.loader import Task, TaskError, load_task
from stop.tasks.scoring import InstanceOutcome, ScoreReport, score_solution


class SandboxFailure(StopError):
    """The sandbox itself failed (not the candidate): the run stops and can be resumed."""


@dataclass(frozen=True)
class Budget:
    """What one improver run may use."""

    lm_calls: int = 4
    responses_per_call: int = 6
    utility_calls: int = 25
    max_tokens: int = 1024
    wall_s: float = 3600.0


@dataclass
class ImproverOutcome:
    returned: str
    fallback: bool
    reason: str
    status: str
    utility_calls: int
    lm_calls: int
    wall_s: float


class Memo:
    """Results already in the run's log, by the deterministic scope that produced them.

    `pinned` (replay): every utility value is computed again and logged, but the improver is
    handed the recorded value, so its choices, and the model calls that follow from them,
    repeat the recording even where solutions draw random numbers; improver runs are redone.
    """

    def __init__(self, events: Iterable[dict] = (), *, pinned: bool = False) -> None:
        self.pinned = pinned
        self.utility: dict[tuple[str, str, int], dict] = {}
        self.tests: dict[str, dict] = {}
        for e in events:
            if e.get("type") == "utility_call":
                self.utility[(e["scope"], e["solution_hash"], int(e["occurrence"]))] = e
            elif e.get("type") == "improver_test" and not pinned:
                self.tests[e["scope"]] = e


class Host:
    """What improver runs share on the host: sandbox, model gateway, event log, memo, jobs."""

    def __init__(self, *, sandbox: Any, gateway: Gateway, recorder: Any, jobs: int = 2,
                 memo: Memo | None = None,
                 save_source: Callable[[str], None] | None = None) -> None:
        self.sandbox = sandbox
        self.gateway = gateway
        self.recorder = recorder
        self.jobs = max(1, jobs)
        self.memo = memo or Memo()
        self.save_source = save_source
        self.slots = threading.BoundedSemaphore(self.jobs)  # bounds leaf (solution) containers


class HostUtility:
    """A utility as an improver sees it: source text in, a float out, every call logged.

    `score(source, scope)` returns {"value": float, ...}. The n-th call on the same source in a
    scope is keyed (scope, hash, n), so a resumed run finds the value it logged before.
    """

    def __init__(self, host: Host, scope: str, score: Callable[[str, str], dict[str, float]],
                 what: str) -> None:
        self.host, self.scope, self.score, self.what = host, scope, score, what
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, solution: str) -> float:
        h = source_hash(solution)
        with self._lock:
            occurrence = self._seen.get(h, 0)
            self._seen[h] = occurrence + 1
        done = self.host.memo.utility.get((self.scope, h, occurrence))
        if done is not None and not self.host.memo.pinned:
            return float(done["value"])
        result = self.score(solution, f"{self.scope}/u{h[:10]}.{occurrence}")
        self.host.recorder.record("utility_call", scope=self.scope, utility=self.what,
                                  solution_hash=h, occurrence=occurrence, **result)
        return float(done["value"] if done is not None else result["value"])


def run_improver(improver_source: str, *, initial_solution: str, description: str,
                 utility_fn: Callable[[str], float], lm: LanguageModel, sandbox: Any,
                 recorder: Any, limits: ExecLimits, use_sandbox_param: bool = False,
                 utility_budget: int = 25) -> str:
    """Run `improve_algorithm(initial_solution, utility, language_model)` in the sandbox."""
    return run_improver_outcome(
        improver_source, initial_solution=initial_solution, description=description,
        utility_fn=utility_fn, lm=lm, sandbox=sandbox, recorder=recorder, limits=limits,
        use_sandbox_param=use_sandbox_param, utility_budget=utility_budget).returned


def run_improver_outcome(improver_source: str, *, initial_solution: str, description: str,
                         utility_fn: Callable[[str], float], lm: LanguageModel, sandbox: Any,
                         recorder: Any, limits: ExecLimits, use_sandbox_param: bool = False,
                         utility_budget: int = 25) -> ImproverOutcome:

    lock = threading.Lock()
    used: dict[str, Any] = {"utility": 0, "service_s": 0.0}
    host_errors: list[BaseException] = []

    def services(method: str, params: dict) -> Any:
        started = time.monotonic()
        try:
            return handle(method, params)
        finally:
            with lock:
                used["service_s"] += time.monotonic() - started

    def handle(method: str, params: dict) -> Any:
        if method == "language_model.batch_prompt":
            expertise = params.get("expertise", "")
            messages = params.get("messages")
            temperature = params.get("temperature", 0.7)
            try:
                check_batch_args(expertise, messages, temperature)
            except ModelArgumentError as e:  # the improver's mistake: it is told, the run goes on
                raise ServiceError(str(e)) from None
            try:
                return lm.batch_prompt(expertise, messages, float(temperature))
            except BudgetExceeded as e:
                raise ServiceError(str(e)) from None
            except StopError as e:  # the model itself failed: the run must stop, not the improver
                host_errors.append(e)
                raise ServiceError("the language model is unavailable") from None
        if method == "utility":
            solution = params.get("solution")
            if not isinstance(solution, str):
                raise ServiceError(f"utility takes the solution's source text, got "
                                   f"{type(solution).__name__}")
            with lock:
                if used["utility"] >= utility_budget:
                    raise ServiceError(f"utility budget exhausted: {used['utility']} of "
                                       f"{utility_budget} calls used")
                used["utility"] += 1
            try:
                return float(utility_fn(solution))
            except StopError as e:
                host_errors.append(e)
                raise ServiceError("the utility is unavailable") from None
        raise ServiceError(f"unknown service {method!r}")

    job = {"kind": "improve", "source": improver_source, "entry": "improve_algorithm",
           "initial_solution": initial_solution,
           "utility": {"description": description, "budget": utility_budget,
                       "use_sandbox_param": use_sandbox_param},
           "language_model": {"budget": lm.budget,
                              "max_responses_per_call": lm.max_responses_per_call}}
    started = time.monotonic()
    result = sandbox.execute(job, limits=limits, role="improver", services=services,
                             recorder=recorder)
    wall = time.monotonic() - started
    if host_errors:
        raise host_errors[0]
    if result.status == "error":  # the sandbox itself failed, not the candidate
        raise SandboxFailure(f"the sandbox failed to run an improver: {_last_line(result.stderr)}")
    returned = result.value.get("returned") if result.ok and isinstance(result.value, dict) else None
    if isinstance(returned, str) and returned.strip():
        outcome = ImproverOutcome(returned, False, "returned source text", result.status,
                                  used["utility"], lm.calls_used, wall)
    else:
        if not result.ok:
            why = f"the improver run ended with status {result.status}"
            if result.limit_fired:
                why += f" ({result.limit_fired} limit)"
            tail = _last_line(result.stderr) or _error_of(result.value)
            if tail:
                why += f": {tail}"
        elif _error_of(result.value):
            why = f"the improver raised {_error_of(result.value)}"
        elif isinstance(returned, str):
            why = "the improver returned an empty string"
        else:
            why = f"the improver returned {_type_of(returned)}, not source text"
        outcome = ImproverOutcome(initial_solution, True, why + "; its input counts as returned",
                                  result.status, used["utility"], lm.calls_used, wall)
    recorder.record("improver_run", scope=lm.scope, improver_hash=source_hash(improver_source),
                    status=outcome.status, fallback=outcome.fallback, reason=outcome.reason,
                    returned_hash=source_hash(outcome.returned),
                    utility_calls=outcome.utility_calls, lm_calls=outcome.lm_calls,
                    wall_s=round(wall, 3), service_s=round(used["service_s"], 3))
    return outcome


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _error_of(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"].splitlines()[-1][:200] if value["error"] else ""
    return ""


def _type_of(value: Any) -> str:
    return "None" if value is None else getattr(value, "type_name", type(value).__name__)


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

    def __init__(self, host: Host, base_task: Task, *, n_tests: int, budget: Budget,
                 use_sandbox_param: bool = False) -> None:
        if base_task.kind != "solve":
            raise TaskError(f"the meta-utility needs a solve task as its base, got {base_task.name} "
                            f"({base_task.kind})")
        self.host, self.base, self.n_tests, self.budget = host, base_task, n_tests, budget
        self.use_sandbox_param = use_sandbox_param

    def score_solution(self, source: str, split: str) -> float:

        with self.host.slots:
            report = score_solution(self.base, source, split=split, sandbox=self.host.sandbox,
                                    recorder=self.host.recorder)
        if report.exec_status == "error":
            raise SandboxFailure(f"the sandbox failed to run a solution of {self.base.name}")
        return float(report.score)

    def evaluate(self, improver_source: str, scope: str) -> MetaScores:
        if self.host.save_source is not None:
            self.host.save_source(improver_source)
        workers = min(self.host.jobs, self.n_tests)
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
        done = self.host.memo.tests.get(scope)
        if done is not None and done.get("candidate_hash") == h:
            return done
        b = self.budget
        lm = LanguageModel(self.host.gateway, budget=b.lm_calls,
                           max_responses_per_call=b.responses_per_call, scope=f"{scope}/lm",
                           max_tokens=b.max_tokens)
        utility = HostUtility(self.host, scope,
                              lambda src, _s: {"value": self.score_solution(src, "val")},
                              self.base.name)
        outcome = run_improver_outcome(
            improver_source, initial_solution=self.base.seed_source,
            description=self.base.description, utility_fn=utility, lm=lm,
            sandbox=self.host.sandbox, recorder=self.host.recorder,
            limits=ExecLimits(wall_s=b.wall_s), use_sandbox_param=self.use_sandbox_param,
            utility_budget=b.utility_calls)
        val = self.score_solution(outcome.returned, "val")
        test = self.score_solution(outcome.returned, "test")
        record = {"scope": scope, "candidate_hash": h, "val": val, "test": test,
                  "returned_hash": source_hash(outcome.returned), "fallback": outcome.fallback,
                  "reason": outcome.reason, "status": outcome.status}
        self.host.recorder.record("improver_test", **record)
        return record

    def as_utility(self, scope: str) -> HostUtility:
        """Û as the utility an improver calls when it improves improvers (logged, memoised)."""

        def score(source: str, call_scope: str) -> dict[str, float]:
            s = self.evaluate(source, call_scope)
            return {"value": s.val_mean, "test": s.test_mean}

        return HostUtility(self.host, scope, score, "meta")


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
        budget = Budget(lm_calls=int(s.get("base_lm_calls", 4)),
                        responses_per_call=int(s.get("base_responses_per_call", 6)),
                        utility_calls=int(s.get("base_utility_calls", 25)),
                        max_tokens=int(s.get("max_tokens", 1024)),
                        wall_s=float(s.get("improver_wall_s", 3600.0)))
    except (TypeError, ValueError) as e:
        raise TaskError(f"task {task.name}: bad [settings] value ({e})") from None
    return base, n_tests, budget, bool(s.get("use_sandbox_param", False))


def score_meta(task: Task, source: str, *, split: str = "val", sandbox: Any,
               recorder: Any = None, model: Any = None, jobs: int = 2) -> Any:
    """Û of one improver source on a meta task, as a ScoreReport (one outcome per test run)."""

    if task.kind != "meta":
        raise TaskError(f"task {task.name} is a {task.kind} task; score it with score_solution")
    if split not in ("val", "test"):
        raise TaskError(f"unknown split {split!r}; choose val or test")
    recorder = recorder if recorder is not None else NullRecorder()
    base, n_tests, budget, flag = meta_setup(task)
    gateway = Gateway(model if model is not None else resolve_model(None), recorder=recorder)
    host = Host(sandbox=sandbox, gateway=gateway, recorder=recorder, jobs=jobs)
    started = time.monotonic()
    h = source_hash(source)
    scores = MetaUtility(host, base, n_tests=n_tests, budget=budget,
                         use_sandbox_param=flag).evaluate(source, f"score/{h}")
    values = scores.val if split == "val" else scores.test
    outcomes = [InstanceOutcome(i, "ok" if not r["fallback"] else "error", float(v),
                                r["reason"] if r["fallback"] else "")
                for i, (r, v) in enumerate(zip(scores.runs, values, strict=True))]
    findings = list(getattr(recorder, "findings", []))
    status = "ok" if not any(r["fallback"] for r in scores.runs) else "fallback"
    mean = mean_ci(values)[0] if values else 0.0
    return ScoreReport(task=task.name, split=split, score=mean, outcomes=outcomes,
                       wall_s=time.monotonic() - started, findings=findings, exec_status=status,
                       backend=getattr(sandbox, "name", ""), candidate_hash=h)
