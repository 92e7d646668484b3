"""The Docker backend: one fresh hardened container per execution, killed from outside.

Threat model: the container is the wall. It has no network, a read-only root, a noexec tmpfs,
no capabilities, a non-root user, pids/memory/CPU/file limits and an empty environment; no host
path and never the Docker socket is mounted. The host owns the clock: it kills the container at
the deadline and reads the outcome (exit code, OOM kill) from the engine, not from the
candidate. Output is read in chunks and only counted past the limit, so a flood costs the host
nothing. Every container carries labels naming its owner process; containers are removed after
use, at exit, on interrupt, and (if a crashed process left some) when the next sandbox opens.

Stdio goes over the engine's attach socket (the multiplexed stream: 8-byte headers, stdout =
protocol channel, stderr = the candidate's stderr). Attaching to an already running container
is what lets a pool of pre-started containers hide the start cost.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stop.fsutil import pid_alive
from stop.sandbox.attach import close as _close
from stop.sandbox.attach import pump
from stop.sandbox.attach import waiting as _waiting
from stop.sandbox.execution import (
    ExecRecorder,
    Execution,
    SandboxUnavailable,
    error_result,
    report,
    warn,
)
from stop.sandbox.flags import container_args, host_config
from stop.sandbox.image import ensure_image
from stop.sandbox.jobs import Job
from stop.sandbox.records import ExecLimits, ExecResult
from stop.sandbox.runtimes import RUNC, choose, require
from stop.sandbox.services import ServiceHandler

LABEL = "stop.sandbox"
OWNER = "stop.owner"
RETIRE_WAIT_S = 2.0  # how long a used container may take to stop by itself before it is killed
POOL_WAIT_S = 30.0  # longest wait for a container already being started before starting another
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()
_CLIENTS: list[Any] = []


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _cleanup_live() -> None:
    with _LIVE_LOCK:
        ids = list(_LIVE)
        _LIVE.clear()
    if not ids or not _CLIENTS:
        return
    api = _CLIENTS[0]
    for cid in ids:
        try:
            api.remove_container(cid, force=True)
        except Exception:
            pass


atexit.register(_cleanup_live)


_POOLS: list[DockerSandbox] = []


def live_ids() -> set[str]:
    """Containers this process created and has not removed yet (pooled ones included)."""
    with _LIVE_LOCK:
        return set(_LIVE)


def pooled_ids() -> set[str]:
    """Containers waiting in the pools of this process (started, not yet used)."""
    out: set[str] = set()
    for sb in list(_POOLS):
        with sb._pool_lock:
            out.update(cid for q in sb._pool.values() for cid in q)
    return out


def _pool_key(limits: ExecLimits, runtime: str = RUNC) -> tuple:
    """What is fixed at container creation (the runtime and the limits); the wall clock and
    the output limit are enforced per execution."""
    return (runtime, limits.memory_mb, limits.cpus, limits.pids, limits.nofile, limits.fsize_mb,
            limits.tmpfs_mb)


class DockerSandbox:
    name = "docker"
    bg_threads = 2  # background threads: starting pool containers, removing used ones

    def __init__(self, image: str | None = None, *, pool_size: int = 0,
                 runtime: str | None = None) -> None:
        self.runtime = choose(runtime)  # runc, runsc: argument, $STOP_SANDBOX_RUNTIME, runc
        try:
            import docker
        except ImportError as e:
            raise SandboxUnavailable("the `docker` Python package is missing: pip install docker"
                                     ) from e
        try:
            self.client = docker.from_env(timeout=120)
            self.client.ping()
        except Exception as e:
            raise SandboxUnavailable(
                "Docker engine not reachable: start dockerd (or `apt-get install docker.io`), "
                f"or pass --sandbox process ({type(e).__name__})") from None
        self.api = self.client.api
        if self.runtime != RUNC:
            require(self.api, self.runtime)
        _CLIENTS.append(self.api)
        if image is None:
            image = ensure_image()
        self.image = image
        self.pool_size = max(0, int(pool_size))
        self._pool: dict[tuple, deque[str]] = {}
        self._pool_lock = threading.Lock()
        self._pool_ready = threading.Condition(self._pool_lock)
        self._filling: dict[tuple, int] = {}
        # The attach stream of each container waiting in the pool: attaching is done while it
        # waits, so taking one from the pool costs no engine call.
        self._attached: dict[str, socket.socket] = {}
        self._bg = ThreadPoolExecutor(self.bg_threads, thread_name_prefix="stop-docker")
        self._closed = False
        # Extra labels for the containers made from now on (the cluster executor names the run,
        # round and execution a container belongs to, so it can be found and reaped).
        self.labels: dict[str, str] = {}
        self.reap_stale()
        _POOLS.append(self)
        if self.pool_size:
            self._refill(ExecLimits())

    # ---- container lifecycle ---------------------------------------------------------------

    def _create(self, limits: ExecLimits) -> str:
        c = self.api.create_container(
            **container_args(self.image, {**self.labels, LABEL: "1", OWNER: _owner_id()}, limits),
            host_config=host_config(self.api, limits, self.runtime))
        cid = c["Id"]
        with _LIVE_LOCK:
            _LIVE.add(cid)
        try:
            self.api.start(cid)
        except Exception:
            self._remove(cid)
            raise
        return cid

    def _remove(self, cid: str) -> None:
        try:
            self.api.remove_container(cid, force=True)
        except Exception:
            pass
        with _LIVE_LOCK:
            _LIVE.discard(cid)

    def reap_stale(self) -> int:
        """Remove labelled containers whose owning process on this host is gone."""
        n = 0
        host = socket.gethostname()
        for c in self.api.containers(all=True, filters={"label": LABEL}):
            owner = (c.get("Labels") or {}).get(OWNER, "")
            h, _, pid = owner.rpartition(":")
            if h != host or not pid.isdigit() or int(pid) == os.getpid():
                continue
            if pid_alive(int(pid)):  # another user's process counts: its container is not ours to reap
                continue
            self._remove(c["Id"])
            n += 1
        return n

    # ---- the pool of pre-started one-shot containers ---------------------------------------

    def _refill(self, limits: ExecLimits) -> None:
        key = _pool_key(limits, self.runtime)
        with self._pool_lock:
            have = len(self._pool.get(key, ())) + self._filling.get(key, 0)
            want = self.pool_size - have
            if want <= 0 or self._closed:
                return
            self._filling[key] = self._filling.get(key, 0) + want
        for _ in range(want):
            self._bg.submit(self._fill_one, key, limits)

    def _fill_one(self, key: tuple, limits: ExecLimits) -> None:
        cid = sock = None
        try:
            cid = self._create(limits)
            sock = self._attach(cid)
        except Exception as e:  # the next execution refills; it fails there with the reason
            if not self._closed:
                warn(f"sandbox pool: could not start a container ({type(e).__name__}: {e})")
        with self._pool_lock:
            self._filling[key] -= 1
            self._pool_ready.notify_all()
            if sock is not None and not self._closed:
                self._pool.setdefault(key, deque()).append(cid)
                self._attached[cid] = sock
                return
        if sock is not None:
            _close(sock)
        if cid is not None:
            self._remove(cid)

    def _acquire(self, limits: ExecLimits) -> str:
        if self.pool_size:
            key = _pool_key(limits, self.runtime)
            with self._pool_lock:
                q = self._pool.get(key)
                cid = q.popleft() if q else None
            self._refill(limits)
            if cid is None:
                cid = self._next_pooled(key)
                self._refill(limits)  # for the one just taken
            if cid is not None:
                return cid
        return self._create(limits)

    def _next_pooled(self, key: tuple) -> str | None:
        """The pool ran dry: when containers for it are already being started, the first of
        them is ready sooner than a fresh one would be (which would compete with them for the
        CPU). None when none is on its way."""
        deadline = time.monotonic() + POOL_WAIT_S
        with self._pool_ready:
            while not self._closed:
                q = self._pool.get(key)
                if q:
                    return q.popleft()
                left = deadline - time.monotonic()
                if not self._filling.get(key) or left <= 0:
                    return None
                self._pool_ready.wait(left)
        return None

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            ids = [cid for q in self._pool.values() for cid in q]
            self._pool.clear()
            socks = list(self._attached.values())
            self._attached.clear()
        for sock in socks:
            _close(sock)
        self._bg.shutdown(wait=True)
        for cid in ids:
            self._remove(cid)

    # ---- one execution ----------------------------------------------------------------------

    def execute(self, job: Job, *, limits: ExecLimits, role: str,
                services: ServiceHandler | None = None, recorder: ExecRecorder | None = None
                ) -> ExecResult:
        holder: dict[str, Any] = {}

        def send(data: bytes) -> None:
            holder["sock"].sendall(data)

        ex = Execution(job, limits=limits, role=role, services=services, backend=self.name,
                       send=send)
        cid = None
        try:
            cid, sock = self._acquire_attached(limits)
            holder["sock"] = sock
            t0 = time.monotonic()  # the candidate's clock starts when it gets its job
            sock.sendall(ex.job_line)
            timed_out = self._pump(sock, ex, t0, cid)
            wall = time.monotonic() - t0
            _close(sock)
            left = ex.limits.wall_s + ex.session.service_seconds() - wall
            if ex.session.done is not None and not timed_out:
                # The closing frame is the outcome; the container stops and is removed in the
                # background, so an ok result has no exit code (no engine call on this path).
                state, killed = {}, False
            else:
                state, killed = self._final_state(cid, 0.0 if timed_out else left)
            wall = time.monotonic() - t0
            result = ex.verdict(exit_code=state.get("ExitCode"), oom=bool(state.get("OOMKilled")),
                                timed_out=timed_out or killed, wall_s=wall)
        except SandboxUnavailable:
            raise
        except Exception as e:
            result = error_result(job, self.name, f"sandbox failure: {type(e).__name__}: {e}")
            result.findings = ex.static + ex.session.findings
        finally:
            ex.session.close()
            if "sock" in holder:
                _close(holder["sock"])
            if cid is not None:
                self._discard(cid)
        result.runtime = self.runtime
        return report(result, role=role, limits=limits, kind=job.kind, recorder=recorder,
                      requests=ex.session.requests)

    def _acquire_attached(self, limits: ExecLimits) -> tuple[str, socket.socket]:
        """A running container with stdio attached. A pooled one that died while it waited
        (an engine restart, a stray kill) is replaced by a fresh one."""
        cid = self._acquire(limits)
        with self._pool_lock:
            sock = self._attached.pop(cid, None)
        if sock is not None:
            if _waiting(sock):
                return cid, sock
            _close(sock)
            self._discard(cid)
            cid = self._create(limits)
        try:
            return cid, self._attach(cid)
        except Exception:
            self._discard(cid)
            raise

    def _discard(self, cid: str) -> None:
        """Remove a used container, in the background unless the sandbox is closing."""
        try:
            if not self._closed:
                self._bg.submit(self._retire, cid)
                return
        except RuntimeError:  # executor already shut down
            pass
        self._remove(cid)

    def _retire(self, cid: str) -> None:
        """After its closing frame the harness exits by itself: removing the container once it
        has stopped spares the engine a kill (a fifth of the cost of removing a running one)."""
        try:
            self.api.wait(cid, timeout=RETIRE_WAIT_S)
        except Exception:
            pass  # still running (or gone): the forced removal below kills it
        self._remove(cid)

    def _attach(self, cid: str) -> socket.socket:
        resp = self.api.attach_socket(
            cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock = getattr(resp, "_sock", resp)
        sock.settimeout(None)
        return sock

    def _pump(self, sock: socket.socket, ex: Execution, t0: float, cid: str) -> bool:
        """Read the attach stream until it ends; kill at the deadline. True if killed."""
        return pump(sock, ex.session, deadline_s=lambda: ex.limits.wall_s
                    + ex.session.service_seconds(), t0=t0, kill=lambda: self.api.kill(cid))

    def _final_state(self, cid: str, left: float) -> tuple[dict, bool]:
        """The engine's view once the container stopped; kill it if it outlives the deadline
        (a candidate can close its streams and keep running). True if killed here."""
        killed = False
        try:
            self.api.wait(cid, timeout=max(1.0, left + 0.5))
        except Exception:
            killed = True
            try:
                self.api.kill(cid)
                self.api.wait(cid, timeout=10)
            except Exception:
                pass
        return self.api.inspect_container(cid).get("State", {}), killed
