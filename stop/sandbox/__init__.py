"""Where untrusted candidates run: the Sandbox protocol, the backends, and what they share.

Threat model: every improver and every solution is hostile. The Docker backend is the wall
(fresh hardened container per execution, no network, no secrets, host-side deadline). The
process backend is a convenience for machines without Docker and is not a security boundary.
Both speak the same framed protocol with the same harness, and both run the static scan first
and report every finding through the recorder.
"""

from __future__ import annotations

from stop.sandbox.docker import DockerSandbox
from stop.sandbox.execution import ExecRecorder, Sandbox, SandboxUnavailable
from stop.sandbox.jobs import ImproveJob, Job, SolveJob
from stop.sandbox.process import ProcessSandbox
from stop.sandbox.services import Allowance, ServiceError, ServiceHandler, Services

__all__ = ["Allowance", "ExecRecorder", "ImproveJob", "Job", "Sandbox", "SandboxUnavailable",
           "ServiceError", "ServiceHandler", "Services", "SolveJob", "open_sandbox"]


def open_sandbox(backend: str = "docker", *, pool_size: int = 0,
                 runtime: str | None = None) -> Sandbox:
    """A ready sandbox. "docker" builds the image if needed; "process" warns it is no boundary.

    runtime: the Docker backend's OCI runtime, runc or runsc (gVisor); None takes
    $STOP_SANDBOX_RUNTIME, else runc. The process backend has none and ignores it.
    """
    if backend == "docker":
        return DockerSandbox(pool_size=pool_size, runtime=runtime)
    if backend == "process":
        return ProcessSandbox()
    raise SandboxUnavailable(f"unknown sandbox backend {backend!r}: choose docker or process")
