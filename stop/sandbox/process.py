"""The process backend: the same harness and protocol in a plain subprocess. NOT a sandbox.

Threat model: none worth the name. The candidate runs as the calling user with the host's
filesystem and network; rlimits, a new session, a scratch directory and a process-group kill at
the deadline only keep honest mistakes (an endless loop, a memory leak) from hurting the run.
It exists for machines without Docker, warns on every use, and is only chosen explicitly.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stop.paths import sandbox_dir
from stop.sandbox.execution import ExecRecorder, Execution, error_result, report, warn
from stop.sandbox.flags import harness_cmd
from stop.sandbox.jobs import Job
from stop.sandbox.records import ExecLimits, ExecResult
from stop.sandbox.services import ServiceHandler

WARNING = ("the process sandbox is NOT a security boundary: candidates run as your user with "
           "your files and network; use the docker backend for anything untrusted")


class ProcessSandbox:
    name = "process"

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="stop-harness-"))
        for src in sorted(sandbox_dir().glob("*.py")):
            shutil.copy2(src, self._dir / src.name)
            os.chmod(self._dir / src.name, 0o444)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def execute(self, job: Job, *, limits: ExecLimits, role: str,
                services: ServiceHandler | None = None, recorder: ExecRecorder | None = None
                ) -> ExecResult:
        warn(WARNING)
        proc: subprocess.Popen | None = None

        def send(data: bytes) -> None:
            proc.stdin.write(data)
            proc.stdin.flush()

        ex = Execution(job, limits=limits, role=role, services=services, backend=self.name,
                       send=send, isolation="process")
        t0 = time.monotonic()
        scratch = tempfile.mkdtemp(prefix="stop-scratch-")
        try:
            proc = subprocess.Popen(
                harness_cmd(limits, sys.executable, str(self._dir / "harness.py")),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=scratch,
                env={"PATH": "/usr/bin:/bin"}, start_new_session=True,
                preexec_fn=lambda: _limit(limits))
            send(ex.job_line)
            timed_out = self._pump(proc, ex, t0)
            if not timed_out:
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
            _killpg(proc)  # whatever the candidate left in its session goes too
            code = proc.wait()
            result = ex.verdict(exit_code=code, oom=False, timed_out=timed_out,
                                wall_s=time.monotonic() - t0)
        except OSError as e:
            result = error_result(job, self.name, f"sandbox failure: {e}")
            result.findings = ex.static + ex.session.findings
        finally:
            ex.session.close()
            if proc is not None:
                _killpg(proc)
                for f in (proc.stdin, proc.stdout, proc.stderr):
                    try:
                        f.close()
                    except OSError:
                        pass
            shutil.rmtree(scratch, ignore_errors=True)
        return report(result, role=role, limits=limits, kind=job.kind, recorder=recorder,
                      requests=ex.session.requests)

    def _pump(self, proc: subprocess.Popen, ex: Execution, t0: float) -> bool:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, ex.session.feed_protocol)
        sel.register(proc.stderr, selectors.EVENT_READ, ex.session.feed_stderr)
        open_streams = 2
        while open_streams:
            if ex.session.done is not None and proc.poll() is not None:
                break  # a child that escaped the session may hold the pipes open
            left = ex.limits.wall_s + ex.session.service_seconds() - (time.monotonic() - t0)
            if left <= 0:
                _killpg(proc)
                return True
            for key, _ in sel.select(min(left, 0.5)):
                data = os.read(key.fileobj.fileno(), 262144)
                if not data:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                else:
                    key.data(data)
        sel.close()
        return False


def _limit(limits: ExecLimits) -> None:
    mb = 1024 * 1024
    # Address space, not RSS: give room for the interpreter and numpy's mappings.
    resource.setrlimit(resource.RLIMIT_AS, ((limits.memory_mb + 512) * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(limits.wall_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
