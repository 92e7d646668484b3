"""The adversarial suite: small hostile candidates and what the sandbox must make of them.

Each ``cNN_*.py`` file here is a real candidate (a solution or an improver) with a ``CANARY``
dict: the row of the threat table it covers, the outcomes allowed, the audit rules that must
appear, and extra checks. The files are data: the host never imports them, it reads ``CANARY``
with ``ast.literal_eval`` and sends the source into the sandbox. A canary passes when the
outcome is allowed, every expected rule was reported, the candidate scored nothing, it
printed no ``ESCAPED`` marker (each canary prints one when an attack worked) and its checks hold.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import resource
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stop.container.codec import Opaque
from stop.runs.recorders import NullRecorder
from stop.sandbox import docker as docker_sandbox
from stop.sandbox.execution import Sandbox
from stop.sandbox.records import AuditFinding, ExecLimits, ExecResult
from stop.sandbox.runtimes import RUNC, canary_expectations
from stop.sandbox.standalone import CapturingSandbox, CountingServices, small_task
from stop.tasks.scoring import score_solution

HERE = Path(__file__).resolve().parent


@dataclass
class Canary:
    name: str
    row: int
    role: str
    source: str
    summary: str
    expect_status: list[str]
    expect_rules: list[str]
    checks: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CanaryOutcome:
    canary: Canary
    status: str
    rules: list[str]
    passed: bool
    problems: list[str]
    wall_s: float
    score: float | None = None
    findings: list[AuditFinding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.canary.row, "case": self.canary.name, "role": self.canary.role,
                "summary": self.canary.summary, "status": self.status, "rules": self.rules,
                "expected_status": self.canary.expect_status,
                "expected_rules": self.canary.expect_rules, "passed": self.passed,
                "problems": self.problems, "wall_s": round(self.wall_s, 3), "score": self.score}


def _meta(source: str, path: Path) -> dict[str, Any]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "CANARY" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path.name}: no CANARY dict")


def load_canaries(select: list[str] | None = None) -> list[Canary]:
    """Every canary, in row order; ``select`` keeps row numbers and names (or parts of names)."""
    out = []
    for path in sorted(HERE.glob("c[0-9][0-9]_*.py")):
        source = path.read_text()
        m = _meta(source, path)
        c = Canary(name=path.stem, row=int(m["row"]), role=m["role"], source=source,
                   summary=m.get("summary", ""), expect_status=list(m["expect_status"]),
                   expect_rules=list(m["expect_rules"]), checks=list(m.get("checks", [])),
                   meta=m)
        if select and not any(s == str(c.row) if s.isdigit() else s in c.name for s in select):
            continue
        out.append(c)
    return out


def for_runtime(canary: Canary, runtime: str) -> Canary:
    """The canary with the expectations of ``runtime`` where they differ (stop.sandbox.runtimes
    says which and why)."""
    over = canary_expectations(canary.name, runtime)
    if not over:
        return canary
    fields = {k: list(over[k]) for k in ("expect_status", "expect_rules", "checks") if k in over}
    return dataclasses.replace(canary, **fields, meta={**canary.meta, **over})


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_canary(sandbox: Sandbox, canary: Canary) -> CanaryOutcome:
    """Run one canary through the real pipeline and judge it (Docker only: canaries bite)."""
    if sandbox.name != "docker":
        raise ValueError("canaries are hostile code: run them only in the docker sandbox")
    canary = for_runtime(canary, getattr(sandbox, "runtime", RUNC))

    token = secrets.token_hex(12)
    os.environ["STOP_CANARY_SECRET"] = token  # must never be seen inside
    rec = NullRecorder()
    problems: list[str] = []
    rss0 = _rss_mb()
    t0 = time.monotonic()
    score: float | None = None
    services = None
    cap = CapturingSandbox(sandbox)
    if canary.role == "solution":
        task = small_task(2, per_call_s=float(canary.meta.get("per_call_s", 1.0)))
        report = score_solution(task, canary.source, split="val", sandbox=cap, recorder=rec)
        status, score, findings = report.exec_status, report.score, list(report.findings)
        counts = report.counts()
        if "instances_invalid" in canary.checks and counts.get("invalid", 0) != len(report.outcomes):
            problems.append(f"expected every instance invalid, got {counts}")
        if score:
            problems.append(f"the canary scored {score:.3f}")
    else:
        services = CountingServices(sandbox)
        job = services.job(canary.source, description="LPN", use_sandbox_param=True)
        cap.execute(job, limits=ExecLimits(wall_s=30), role="improver", services=services,
                    recorder=rec)
        status, findings = cap.results[-1].status, list(cap.results[-1].findings)
    wall = time.monotonic() - t0
    os.environ.pop("STOP_CANARY_SECRET", None)
    result = cap.results[-1] if cap.results else None
    text = (result.stdout + "\n" + result.stderr) if result is not None else ""
    stdout_bytes = result.stdout_bytes if result is not None else 0
    rules = sorted({f.rule for f in findings})
    if status not in canary.expect_status:
        problems.append(f"outcome {status}, expected {'/'.join(canary.expect_status)}")
    for r in canary.expect_rules:
        if r not in rules:
            problems.append(f"no {r} finding")
    for r, layer in canary.meta.get("expect_layers", {}).items():
        if not any(f.rule == r and f.layer == layer for f in findings):
            problems.append(f"no {r} finding at the {layer} layer")
        if not any(f.rule == r and f.source_line for f in findings):
            problems.append(f"the {r} finding cites no source line")
    for k, v in canary.meta.get("expect_detail", {}).items():
        if not any(f.detail.get(k) == v for f in findings):
            problems.append(f"no finding with {k}={v}")
    needle = canary.meta.get("expect_detail_contains")
    if needle and not any(needle in (str(f.detail) + f.attempted) for f in findings):
        problems.append(f"no finding names {needle}")
    contained = canary.meta.get("contained", [])
    escaped = [ln for ln in text.splitlines() if "ESCAPED" in ln
               and not any(ln.strip().startswith(m) for m in contained)]
    if escaped:
        problems.append("an attack worked: " + escaped[0].strip()[:120])
    if canary.meta.get("expect_stdout"):
        if canary.meta["expect_stdout"] not in text:
            problems.append(f"output lacks {canary.meta['expect_stdout']!r}")
    problems += _checks(canary, services, result, token, text, stdout_bytes, rss0)
    return CanaryOutcome(canary, status, rules, not problems, problems, wall, score, findings)


def _checks(canary: Canary, services: CountingServices | None, result: ExecResult | None,
            token: str, text: str, stdout_bytes: int, rss0: float) -> list[str]:
    problems = []
    for check in canary.checks:
        if check == "no_secret" and (token in text or "STOP_CANARY_SECRET" in text):
            problems.append("a host secret reached the container")
        elif check == "output_truncated" and stdout_bytes < 256 * 1024 * 1024:
            problems.append(f"flood not counted: stdout_bytes={stdout_bytes}")
        elif check == "host_memory_flat" and _rss_mb() - rss0 > 100:
            problems.append(f"host memory grew by {_rss_mb() - rss0:.0f} MB")
        elif check == "still_sandboxed":
            if not services or not services.scored:
                problems.append("the utility call did not run the solution in a sandbox")
        elif check == "budget_held" and services is not None:
            if services.lm_calls.used > services.lm_calls.limit or \
                    services.utility_calls.used > services.utility_calls.limit:
                problems.append("a host budget was exceeded")
            if services.refused == 0:
                problems.append("the host never refused a call past the budget")
        elif check == "returned_opaque":
            got = (result.value or {}).get("returned") if result is not None else None
            if not isinstance(got, Opaque):
                problems.append(f"the str subclass came back as {type(got).__name__}")
        elif check == "no_leftover_container":
            problems += _leftovers()
    return problems


def _leftovers() -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        live = docker_sandbox.live_ids()
        pooled = docker_sandbox.pooled_ids()
        if not (live - pooled):
            return []
        time.sleep(0.2)
    return [f"{len(live - pooled)} container(s) still present after the run"]
