"""Scoring a solution on a task's hidden instances: one sandboxed execution, host-side grading.

The candidate's `algorithm` runs in the sandbox on every instance of the split in one container
(per-call time limits measured inside, the wall clock enforced by the host). What comes back is
data only; each value is type- and shape-checked here before the task's scorer sees it. One bad
instance scores 0 for that instance only. A rejected value is an audit finding: returning a
wrong shape or an object with a rigged `__eq__` is how STOP's improvers inflated their scores.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stop.sandbox.jobs import SolveJob
from stop.sandbox.records import AuditFinding, ExecLimits, source_hash
from stop.tasks.checks import OutputRejected
from stop.tasks.loader import Instance, Task, TaskError, instances


def machine_info() -> dict[str, Any]:
    """Where a score was measured: time limits make scores depend on the hardware."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0]}


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

START_SLACK_S = 5.0
# Per call, outside the candidate's own limit: decoding arguments, encoding and framing results.
PER_CALL_SLACK_S = 0.05
RULE_SEVERITY = {"wrong-shape": "medium", "wrong-type": "medium"}
MAX_DETAIL = 300


@dataclass
class InstanceOutcome:
    index: int
    status: str  # ok | wrong | timeout | error | invalid
    score: float
    detail: str = ""
    elapsed_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "status": self.status, "score": round(self.score, 6),
                "detail": self.detail, "elapsed_s": self.elapsed_s}


@dataclass
class ScoreReport:
    task: str
    split: str
    score: float
    outcomes: list[InstanceOutcome]
    wall_s: float
    findings: list[AuditFinding] = field(default_factory=list)
    exec_status: str = ""
    backend: str = ""
    candidate_hash: str = ""
    machine: dict[str, Any] = field(default_factory=machine_info)
    at: str = field(default_factory=timestamp)

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(("ok", "wrong", "timeout", "error", "invalid"), 0)
        for o in self.outcomes:
            c[o.status] = c.get(o.status, 0) + 1
        return c

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "split": self.split, "score": self.score,
            "counts": self.counts(), "n": len(self.outcomes),
            "instances": [o.to_dict() for o in self.outcomes],
            "findings": [f.to_dict() for f in self.findings],
            "wall_s": round(self.wall_s, 3), "exec_status": self.exec_status,
            "backend": self.backend, "candidate_hash": self.candidate_hash,
            "machine": self.machine, "at": self.at,
        }


def exec_limits(task: Task, n_calls: int) -> ExecLimits:
    """The host's deadline: every call may use its whole limit, plus start-up and framing."""
    wall = n_calls * (task.per_call_s + PER_CALL_SLACK_S) + START_SLACK_S
    return ExecLimits(wall_s=round(wall, 3), memory_mb=task.memory_mb)


def score_solution(task: Task, source: str, *, split: str = "val", sandbox: Any,
                   recorder: Any = None) -> ScoreReport:
    """Run `source` on the split's instances in `sandbox` and score it on the host."""
    if task.kind != "solve":
        raise TaskError(f"task {task.name} is a {task.kind} task; score it with stop.core.meta.score_meta")
    if not isinstance(source, str):
        raise TaskError(f"a solution must be source text, got {type(source).__name__}")
    insts = instances(task, split)
    job = SolveJob(source, [inst.args for inst in insts], entry=task.entry,
                   per_call_s=task.per_call_s)
    started = time.monotonic()
    result = sandbox.execute(job, limits=exec_limits(task, len(insts)), role="solution",
                             recorder=recorder)
    wall = time.monotonic() - started
    chash = source_hash(source)
    outcomes, rejected = grade_calls(task, insts, result.status, result.value)
    host_findings = _findings(task, split, chash, rejected)
    for f in host_findings:
        if recorder is not None:
            recorder.finding(f)
    score = sum(o.score for o in outcomes) / len(outcomes) if outcomes else 0.0
    report = ScoreReport(task=task.name, split=split, score=score, outcomes=outcomes, wall_s=wall,
                         findings=list(result.findings) + host_findings,
                         exec_status=result.status, backend=getattr(sandbox, "name", ""),
                         candidate_hash=chash)
    if recorder is not None:
        recorder.record("task_score", task=task.name, split=split, score=score,
                        counts=report.counts(), candidate_hash=chash, exec_status=result.status,
                        wall_s=round(wall, 3))
    return report


def grade_calls(task: Task, insts: list[Instance], exec_status: str,
                value: Any) -> tuple[list[InstanceOutcome], list[tuple[int, OutputRejected]]]:
    """Per-instance outcomes from the harness's per-call results, plus the rejected outputs."""
    calls = value if type(value) is list else []
    trusted = exec_status != "tampered"
    outcomes: list[InstanceOutcome] = []
    rejected: list[tuple[int, OutputRejected]] = []
    for i, inst in enumerate(insts):
        call = calls[i] if trusted and i < len(calls) else None
        if call is None:
            outcomes.append(_missing(i, exec_status))
            continue
        outcome, rej = grade_call(task, i, inst, call)
        outcomes.append(outcome)
        if rej is not None:
            rejected.append((i, rej))
    return outcomes, rejected


def _missing(i: int, exec_status: str) -> InstanceOutcome:
    if exec_status == "tampered":
        return InstanceOutcome(i, "error", 0.0, "the execution was tampered with; no result is trusted")
    if exec_status == "timeout":
        return InstanceOutcome(i, "timeout", 0.0, "not reached before the container's deadline")
    return InstanceOutcome(i, "error", 0.0, f"no result: the container ended with status {exec_status}")


def grade_call(task: Task, i: int, inst: Instance,
               call: Any) -> tuple[InstanceOutcome, OutputRejected | None]:
    if type(call) is not dict or call.get("status") not in ("ok", "error", "timeout"):
        return InstanceOutcome(i, "error", 0.0, "malformed result from the harness"), None
    elapsed = call.get("elapsed_s")
    elapsed = float(elapsed) if type(elapsed) in (int, float) else None
    if call["status"] == "timeout" or (elapsed is not None and elapsed > task.per_call_s):
        return InstanceOutcome(i, "timeout", 0.0, f"over the {task.per_call_s:g} s limit", elapsed), None
    if call["status"] == "error":
        return InstanceOutcome(i, "error", 0.0, _clip(str(call.get("error", ""))), elapsed), None
    scorer = task.scorer
    try:
        checked = scorer.check(call.get("value"), inst)
    except OutputRejected as e:
        return InstanceOutcome(i, "invalid", 0.0, _clip(f"{e.rule}: {e}"), elapsed), e
    except Exception as e:  # a value that breaks the check is rejected, never scored
        rej = OutputRejected(f"the output could not be checked ({type(e).__name__}: {e})")
        return InstanceOutcome(i, "invalid", 0.0, _clip(f"wrong-type: {rej}"), elapsed), rej
    try:
        graded = scorer.score(checked, inst)
        score, status = graded if isinstance(graded, tuple) else (graded, None)
        score = float(score)
        if score != score:  # NaN
            raise ValueError("score() returned NaN")
    except Exception as e:  # the task's scorer failed: that instance scores 0, the run goes on
        return InstanceOutcome(i, "error", 0.0, _clip(f"scorer failed: {type(e).__name__}: {e}"), elapsed), None
    score = min(1.0, max(0.0, score))
    status = status or ("ok" if score > 0 else "wrong")
    return InstanceOutcome(i, status, score, "", elapsed), None


def _findings(task: Task, split: str, chash: str,
              rejected: list[tuple[int, OutputRejected]]) -> list[AuditFinding]:
    """One host finding per broken rule, listing every instance that broke it."""
    by_rule: dict[str, list[tuple[int, OutputRejected]]] = {}
    for i, e in rejected:
        by_rule.setdefault(e.rule, []).append((i, e))
    out = []
    for rule, items in by_rule.items():
        first_i, first_e = items[0]
        out.append(AuditFinding(
            rule=rule, severity=RULE_SEVERITY.get(rule, "medium"), layer="host", role="solution",
            attempted=_clip(f"returned an output the host rejected on {len(items)} instance(s) "
                            f"of {task.name}/{split}; instance {first_i}: {first_e}"),
            action="blocked", candidate_hash=chash,
            detail={"task": task.name, "split": split, "instances": [i for i, _ in items]}))
    return out


def _clip(s: str) -> str:
    return s if len(s) <= MAX_DETAIL else s[:MAX_DETAIL] + "..."
