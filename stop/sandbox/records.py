"""Plain records shared across the host side: limits, execution outcomes, audit findings."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "low", "medium", "high", "critical")


def severity_rank(level: str) -> int:
    try:
        return SEVERITIES.index(level)
    except ValueError:
        raise ValueError(f"unknown severity {level!r}; choose one of {', '.join(SEVERITIES)}") from None


def source_hash(source: str) -> str:
    """Stable short identity of a candidate's source text."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ExecLimits:
    """Resource limits for one sandboxed execution. The host enforces wall_s from outside."""

    wall_s: float = 10.0
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 64
    nofile: int = 256
    fsize_mb: int = 16
    tmpfs_mb: int = 64
    output_bytes: int = 256 * 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def threads(self) -> int:
        """How many BLAS and OpenMP threads the harness lets the libraries start: the CPUs the
        container may use, rounded up (more would only spin on CPU its quota does not give)."""
        return max(1, math.ceil(self.cpus))


@dataclass
class AuditFinding:
    """One detected attempt by a candidate to weaken the sandbox, a budget or the scorer.

    layer: where it was seen: "static" (AST scan), "runtime" (audit hook in the harness),
    "container" (outcome read from the engine: OOM, pids, deadline), or "host" (the host
    rejected something: a forged frame, a wrong shape, a budget breach).
    action: what the sandbox did: "blocked", "contained" or "logged".
    runtime: the OCI runtime whose container ran the execution ("runc", "runsc"); None for the
    process backend and for findings logged before the field existed.
    """

    rule: str
    severity: str
    layer: str
    role: str
    attempted: str
    action: str
    candidate_hash: str = ""
    line: int | None = None
    source_line: str = ""
    run_id: str | None = None
    round: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    runtime: str | None = None

    @property
    def id(self) -> str:
        parts = [self.run_id, self.round, self.candidate_hash, self.role, self.rule,
                 self.layer, self.line, self.attempted]
        if self.runtime is not None:  # the same attempt contained by another runtime is another
            parts.append(self.runtime)  # finding; ids of findings without one are unchanged
        key = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditFinding:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


@dataclass
class ExecResult:
    """What came back from one sandboxed execution.

    status: "ok" (closing frame received), "timeout" (host killed at the deadline),
    "oom" (memory limit), "crashed" (exited without a closing frame), "tampered"
    (broken or forged protocol), "error" (the sandbox itself failed).
    value: the decoded payload of the closing frame, or None.
    """

    status: str
    value: Any = None
    exit_code: int | None = None
    signal: str | None = None
    oom_killed: bool = False
    wall_s: float = 0.0
    stdout: str = ""
    stdout_bytes: int = 0
    stderr: str = ""
    stderr_bytes: int = 0
    limit_fired: str | None = None
    backend: str = ""
    candidate_hash: str = ""
    findings: list[AuditFinding] = field(default_factory=list)
    runtime: str | None = None  # the container's OCI runtime (docker backend only)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict[str, Any]:
        """The part of the result that goes into the event log (no payload)."""
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "wall_s": round(self.wall_s, 4),
            "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes,
            "limit_fired": self.limit_fired,
            "backend": self.backend,
            "runtime": self.runtime,
            "candidate_hash": self.candidate_hash,
            "findings": len(self.findings),
        }
