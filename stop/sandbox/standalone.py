"""Running one candidate by itself, outside a run: what `stop exec` and the adversarial suite share.

A solution is scored on a few validation instances of a small task; an improver gets host
services with small hard budgets (`CountingServices`): its model answers with a seed solution
and its utility scores for real, in a fresh sandboxed execution. `CapturingSandbox` keeps each
execution's result, output included, for the caller to judge. Threat model: the candidate is
hostile; nothing here runs it outside the sandbox it is given.
"""

from __future__ import annotations

import dataclasses

from stop.core.budget import PAPER
from stop.sandbox.execution import ExecRecorder, Sandbox
from stop.sandbox.jobs import ImproveJob, Job
from stop.sandbox.records import ExecLimits, ExecResult
from stop.sandbox.services import Allowance, ServiceHandler, Services
from stop.tasks.loader import Task, load_task
from stop.tasks.scoring import score_solution

SOLUTION_TASK = "parity_noise"
SEED_SOLUTION = '''import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    return np.zeros(len(test_samples), dtype=int)
'''


def small_task(n: int, *, per_call_s: float | None = None, name: str = SOLUTION_TASK) -> Task:
    """A task cut to its first `n` validation instances (each call under `per_call_s`, when
    given, instead of the task's own limit)."""
    task = load_task(name)
    return dataclasses.replace(task, n_val=n, per_call_s=task.per_call_s if per_call_s is None
                               else per_call_s)


def score_small(sandbox: Sandbox, source: str, *, n: int, per_call_s: float = 1.0,
                recorder: ExecRecorder | None = None) -> float:
    return score_solution(small_task(n, per_call_s=per_call_s), source, split="val",
                          sandbox=sandbox, recorder=recorder).score


class CapturingSandbox:
    """Passes executions through to a sandbox and keeps every result (with its output)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox, self.name = sandbox, sandbox.name
        self.results: list[ExecResult] = []

    def execute(self, job: Job, *, limits: ExecLimits, role: str,
                services: ServiceHandler | None = None,
                recorder: ExecRecorder | None = None) -> ExecResult:
        r = self.sandbox.execute(job, limits=limits, role=role, services=services,
                                 recorder=recorder)
        self.results.append(r)
        return r

    def close(self) -> None:
        """Nothing to close: the wrapped sandbox belongs to whoever opened it."""


class CountingServices(Services):
    """Host services with hard budgets for an improver run by itself.

    The language model answers every message with the seed solution; `utility` scores the
    solution for real, in a fresh sandboxed execution, whatever flag the caller passed.
    `scored` lists (backend, score) of each utility call.
    """

    def __init__(self, sandbox: Sandbox, *, lm_budget: int = PAPER.lm_calls,
                 utility_budget: int = 3) -> None:
        super().__init__()
        self.sandbox = sandbox
        self.lm_calls = Allowance("language-model", lm_budget)
        self.utility_calls = Allowance("utility", utility_budget)
        self.scored: list[tuple[str, float]] = []

    @property
    def refused(self) -> int:
        return self.lm_calls.refused + self.utility_calls.refused

    def job(self, source: str, *, description: str, use_sandbox_param: bool) -> ImproveJob:
        """The improve job of `source` on the seed solution, its stubs showing these budgets."""
        return ImproveJob(source=source, initial_solution=SEED_SOLUTION, description=description,
                          utility_budget=self.utility_calls.limit,
                          use_sandbox_param=use_sandbox_param, lm_budget=self.lm_calls.limit,
                          max_responses_per_call=PAPER.responses_per_call)

    def summary(self) -> str:
        return (f"language model calls {self.lm_calls.used}/{self.lm_calls.limit}, "
                f"utility calls {self.utility_calls.used}/{self.utility_calls.limit}, "
                f"refused {self.refused}")

    def batch_prompt(self, params: dict) -> list[str]:
        with self.lock:
            self.lm_calls.take()
        return [f"```python\n{SEED_SOLUTION}```"] * len(params.get("messages", []))

    def utility(self, params: dict) -> float:
        with self.lock:
            self.utility_calls.take()
        score = score_small(self.sandbox, str(params.get("solution", "")), n=2)
        with self.lock:
            self.scored.append((self.sandbox.name, score))
        return score
