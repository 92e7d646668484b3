"""Running improvers in the sandbox: one improver run, its host services, and its builder.

Threat model: an improver is untrusted code, the seed included. It runs as an `improve` job in a
fresh container; its `language_model` and `utility` are stubs whose calls reach this process as
service requests. Every budget is counted here, per improver run: the model-call budget inside
the host-side `LanguageModel`, the utility budget in the run's `ImproverServices`. Nothing the
improver does to its stubs changes either. Whatever it returns is only data: if it is not a
string (or the run crashed or hit its deadline), the run counts as returning its input unchanged.

Resume: every utility value is logged (`utility_call`), and so is every test run of the
meta-utility (`improver_test`, see `stop.core.meta`). A resumed run reads them back into a `Memo`
and reuses them instead of running the same scope again, so the history holds each result once
and the run reaches the same state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stop.container.codec import Opaque
from stop.core.budget import Budget
from stop.errors import StopError
from stop.models.base import ModelArgumentError, check_batch_args
from stop.models.gateway import BudgetExceeded, Gateway, LanguageModel
from stop.runs.recorders import Recorder
from stop.sandbox import Allowance, ImproveJob, Sandbox, ServiceError, Services
from stop.sandbox.records import ExecLimits, source_hash


class SandboxFailure(StopError):
    """The sandbox itself failed (not the candidate): the run stops and can be resumed."""


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


class RunContext:
    """What the improver runs of one run share on the host: the sandbox, the model gateway, the
    event log, the memo of logged results, how many run at once, where candidates are kept."""

    def __init__(self, *, sandbox: Sandbox, gateway: Gateway, recorder: Recorder, jobs: int = 2,
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

    def __init__(self, context: RunContext, scope: str,
                 score: Callable[[str, str], dict[str, float]], what: str) -> None:
        self.context, self.scope, self.score, self.what = context, scope, score, what
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, solution: str) -> float:
        h = source_hash(solution)
        with self._lock:
            occurrence = self._seen.get(h, 0)
            self._seen[h] = occurrence + 1
        memo = self.context.memo
        done = memo.utility.get((self.scope, h, occurrence))
        if done is not None and not memo.pinned:
            return float(done["value"])
        result = self.score(solution, f"{self.scope}/u{h[:10]}.{occurrence}")
        self.context.recorder.record("utility_call", scope=self.scope, utility=self.what,
                                     solution_hash=h, occurrence=occurrence, **result)
        return float(done["value"] if done is not None else result["value"])


class ImproverServices(Services):
    """The host side of one improver run: its model (the budget is counted in `lm`) and its
    utility (the budget is counted here). When the model or the utility itself fails on the
    host, the improver only sees a refusal; the failure is kept in `host_errors` and stops the
    run once the execution is over."""

    def __init__(self, lm: LanguageModel, utility_fn: Callable[[str], float],
                 utility_budget: int) -> None:
        super().__init__()
        self.lm, self.utility_fn = lm, utility_fn
        self.utility_calls = Allowance("utility", utility_budget)
        self.host_errors: list[StopError] = []
        self.service_s = 0.0

    def __call__(self, method: str, params: dict) -> Any:
        started = time.monotonic()
        try:
            return super().__call__(method, params)
        finally:
            with self.lock:
                self.service_s += time.monotonic() - started

    def batch_prompt(self, params: dict) -> list[str]:
        expertise = params.get("expertise", "")
        messages = params.get("messages")
        temperature = params.get("temperature", 0.7)
        try:
            check_batch_args(expertise, messages, temperature)
        except ModelArgumentError as e:  # the improver's mistake: it is told, the run goes on
            raise ServiceError(str(e)) from None
        try:
            return self.lm.batch_prompt(expertise, messages, float(temperature))
        except BudgetExceeded as e:
            raise ServiceError(str(e)) from None
        except StopError as e:  # the model itself failed: the run must stop, not the improver
            self.host_errors.append(e)
            raise ServiceError("the language model is unavailable") from None

    def utility(self, params: dict) -> float:
        solution = params.get("solution")
        if not isinstance(solution, str):
            raise ServiceError(f"utility takes the solution's source text, got "
                               f"{type(solution).__name__}")
        with self.lock:
            self.utility_calls.take()
        try:
            return float(self.utility_fn(solution))
        except StopError as e:
            self.host_errors.append(e)
            raise ServiceError("the utility is unavailable") from None


def run_improver_outcome(improver_source: str, *, initial_solution: str, description: str,
                         utility_fn: Callable[[str], float], lm: LanguageModel, sandbox: Sandbox,
                         recorder: Recorder, limits: ExecLimits, utility_budget: int,
                         use_sandbox_param: bool = False) -> ImproverOutcome:
    """Run `improve_algorithm(initial_solution, utility, language_model)` in the sandbox once,
    and log one improver_run event. `ImproverRun` assembles the arguments for a given budget."""
    services = ImproverServices(lm, utility_fn, utility_budget)
    job = ImproveJob(source=improver_source, initial_solution=initial_solution,
                     description=description, utility_budget=utility_budget,
                     use_sandbox_param=use_sandbox_param, lm_budget=lm.budget,
                     max_responses_per_call=lm.max_responses_per_call)
    started = time.monotonic()
    result = sandbox.execute(job, limits=limits, role="improver", services=services,
                             recorder=recorder)
    wall = time.monotonic() - started
    if services.host_errors:
        raise services.host_errors[0]
    if result.status == "error":  # the sandbox itself failed, not the candidate
        raise SandboxFailure(f"the sandbox failed to run an improver: {_last_line(result.stderr)}")
    used = services.utility_calls.used
    returned = result.value.get("returned") if result.ok and isinstance(result.value, dict) else None
    if isinstance(returned, str) and returned.strip():
        outcome = ImproverOutcome(returned, False, "returned source text", result.status,
                                  used, lm.calls_used, wall)
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
                                  result.status, used, lm.calls_used, wall)
    recorder.record("improver_run", scope=lm.scope, improver_hash=source_hash(improver_source),
                    status=outcome.status, fallback=outcome.fallback, reason=outcome.reason,
                    returned_hash=source_hash(outcome.returned),
                    utility_calls=outcome.utility_calls, lm_calls=outcome.lm_calls,
                    wall_s=round(wall, 3), service_s=round(services.service_s, 3))
    return outcome


@dataclass(frozen=True)
class ImproverRun:
    """An improver run with these budgets, in `scope`: a fresh model budget (scope `<scope>/lm`),
    a utility logged and memoised in the scope, and the run itself in the context's sandbox.

    recorder: where the improver_run event and the run's sandbox events go (default: the
    context's recorder; utility calls always go to the context's).
    """

    context: RunContext
    budget: Budget
    scope: str
    use_sandbox_param: bool = False
    recorder: Recorder | None = None

    def language_model(self) -> LanguageModel:
        b = self.budget
        return LanguageModel(self.context.gateway, budget=b.lm_calls,
                             max_responses_per_call=b.responses_per_call, scope=f"{self.scope}/lm",
                             max_tokens=b.max_tokens)

    def utility(self, score: Callable[[str], float], what: str) -> HostUtility:
        """The utility that scores a solution with `score(source)`; `what` names it in the log."""
        return HostUtility(self.context, self.scope, lambda source, _scope: {"value": score(source)},
                           what)

    def run(self, improver_source: str, *, initial_solution: str, description: str,
            utility: Callable[[str], float], lm: LanguageModel | None = None) -> ImproverOutcome:
        return run_improver_outcome(
            improver_source, initial_solution=initial_solution, description=description,
            utility_fn=utility, lm=lm if lm is not None else self.language_model(),
            sandbox=self.context.sandbox,
            recorder=self.recorder if self.recorder is not None else self.context.recorder,
            limits=ExecLimits(wall_s=self.budget.wall_s), use_sandbox_param=self.use_sandbox_param,
            utility_budget=self.budget.utility_calls)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _error_of(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"].splitlines()[-1][:200] if value["error"] else ""
    return ""


def _type_of(value: Any) -> str:
    if isinstance(value, Opaque):  # a value the codec refused to carry: its type name survives
        return value.type_name
    return "None" if value is None else type(value).__name__
