"""What every sandbox backend shares: the Sandbox protocol, one execution's scan, framing and
verdict, and how its findings are recorded.

Threat model: see `stop.sandbox`. Nothing here trusts the candidate: the verdict is read from the
closing frame and the engine's outcome, never from what the candidate printed.
"""

from __future__ import annotations

import json
import secrets
import signal as _signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

from stop.errors import StopError
from stop.sandbox.bridge import Session
from stop.sandbox.jobs import ImproveJob, Job, SolveJob
from stop.sandbox.records import AuditFinding, ExecLimits, ExecResult, source_hash
from stop.sandbox.rules import link_findings
from stop.sandbox.scan import scan
from stop.sandbox.services import ServiceHandler

ROLES = ("improver", "solution")


class SandboxUnavailable(StopError):
    """The requested sandbox backend cannot run here; the message names the fix."""


class ExecRecorder(Protocol):
    """What an execution reports to: its `sandbox_exec` event and its findings, stamped with the
    recorder's run and round. The part of `stop.runs.recorders.Recorder` the sandbox uses,
    declared here because the recorders import the sandbox's records."""

    run_id: str
    context: dict[str, Any]

    def record(self, type: str, **fields: Any) -> None: ...

    def finding(self, finding: AuditFinding) -> None: ...


class Sandbox(Protocol):
    name: str

    def execute(self, job: Job, *, limits: ExecLimits, role: str,
                services: ServiceHandler | None = None,
                recorder: ExecRecorder | None = None) -> ExecResult: ...

    def close(self) -> None: ...


def check_job(job: Job, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if not isinstance(job, SolveJob | ImproveJob):
        raise ValueError(f"a job is a SolveJob or an ImproveJob, not {type(job).__name__}")
    if not isinstance(job.source, str):
        raise ValueError("a job's source must be the candidate's source text")


class Execution:
    """The backend-independent part of one execution: scan, framing, verdict, recording.

    isolation: what the harness runs in; it assumes a container unless told otherwise (it then
    looks only at its own session for processes left behind).
    """

    def __init__(self, job: Job, *, limits: ExecLimits, role: str,
                 services: ServiceHandler | None, backend: str,
                 send: Callable[[bytes], None], isolation: str = "container") -> None:
        check_job(job, role)
        self.job, self.limits, self.role, self.backend = job, limits, role, backend
        self.source = job.source
        self.candidate_hash = source_hash(self.source)
        self.static = scan(self.source, role=role, candidate_hash=self.candidate_hash)
        self.nonce = secrets.token_hex(16)
        wire = job.to_wire()
        if isolation != "container":
            wire["isolation"] = isolation
        wire.update(nonce=self.nonce, output_bytes=limits.output_bytes)
        self.job_line = (json.dumps(wire, separators=(",", ":"), allow_nan=False) + "\n").encode()
        self.session = Session(nonce=self.nonce, role=role, source=self.source,
                               candidate_hash=self.candidate_hash,
                               output_bytes=limits.output_bytes, services=services, send=send)

    def verdict(self, *, exit_code: int | None, oom: bool, timed_out: bool, wall_s: float,
                error: str | None = None) -> ExecResult:
        s = self.session
        s.check_output()
        sig = None
        if exit_code is not None and exit_code > 128:
            try:
                sig = _signal.Signals(exit_code - 128).name
            except ValueError:
                sig = None
        elif exit_code is not None and exit_code < 0:
            try:
                sig = _signal.Signals(-exit_code).name
            except ValueError:
                sig = None
        limit = None
        if error is not None:
            status = "error"
        elif s.tampered:
            status = "tampered"
        elif timed_out:
            status, limit = "timeout", "wall_s"
            s.finding("resource-timeout", "container",
                      f"still running at the {self.limits.wall_s}s deadline: killed",
                      limit="wall_s", wall_s=self.limits.wall_s)
        elif oom:
            status, limit = "oom", "memory_mb"
            s.finding("resource-memory", "container",
                      f"killed by the {self.limits.memory_mb} MB memory limit",
                      limit="memory_mb", memory_mb=self.limits.memory_mb)
        elif s.done is not None:
            status = "ok"
        else:
            status = "crashed"
            s.finding("exit-early", "host",
                      f"exited (code {exit_code}{', ' + sig if sig else ''}) without a closing frame",
                      exit_code=exit_code)
        if status in ("ok", "timeout", "oom", "crashed"):
            value = s.value(self.job.kind)
        else:
            value = None
        findings = self.static + s.findings
        return ExecResult(status=status, value=value, exit_code=exit_code, signal=sig,
                          oom_killed=oom, wall_s=wall_s, stdout=s.stdout.text(),
                          stdout_bytes=s.stdout.total, stderr=s.stderr.text()
                          if error is None else (s.stderr.text() + "\n" + error).strip(),
                          stderr_bytes=s.stderr.total, limit_fired=limit, backend=self.backend,
                          candidate_hash=self.candidate_hash, findings=findings)


def report(result: ExecResult, *, role: str, limits: ExecLimits, kind: str,
           recorder: ExecRecorder | None, requests: int = 0) -> ExecResult:
    """Stamp, link and record the findings, then the one sandbox_exec event."""
    if recorder is not None:
        # A finding's id covers its run and round, and links are made by id: stamp, then link.
        rnd = recorder.context.get("round")
        for f in result.findings:
            f.run_id = f.run_id or recorder.run_id or None
            if f.round is None:
                f.round = rnd
    for f in result.findings:
        f.runtime = f.runtime or result.runtime  # which runtime's container held it
    link_findings(result.findings)
    if recorder is not None:
        recorder.record("sandbox_exec", role=role, kind=kind, limits=limits.to_dict(),
                        service_requests=requests, **result.summary())
        for f in result.findings:
            recorder.finding(f)
    return result


def error_result(job: Job, backend: str, message: str) -> ExecResult:
    """The sandbox itself failed (not the candidate)."""
    return ExecResult(status="error", backend=backend, stderr=message,
                      candidate_hash=source_hash(job.source))


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


