"""`RaySandbox`: the Sandbox backend that runs each execution as a Ray task on a `docker` node.

`execute(job, limits=, role=, services=, recorder=)` behaves like `DockerSandbox.execute`: the
task starts the same hardened one-shot container on its node and returns the same ExecResult;
service requests come back to this process through the relay (stop.cluster.relay) and are
answered by `services` here; only this process records (`report()` with the returned result).

Scheduling: a solution scoring takes one unit of its node's `docker` resource (a node
advertises as many as it runs containers at once). An improver run takes none: it is pinned to
the docker node with the fewest improver runs of this driver, so the improvers waiting on
their utility calls never hold the slots those calls need (even a fraction of a slot would:
Ray places a task needing one whole unit only where one whole unit is free).

Faults: Ray has no per-task deadline, so the worker kills the container at `wall_s` as a local
run does, and the driver cancels a task still running `grace_s` past that (force: the worker
process dies, the container's harness sees its channel close and ends, and the container is
reaped by its labels). A task whose node or worker died is run again on another node (at most
`attempts` times); its service requests are answered from the earlier attempt's journal, so no
budget is spent and nothing is logged twice. A node that lacks the image when a task reaches it
(it joined later) is given the image and the task is run again.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from stop.cluster.connect import DOCKER, ClusterError, RaySession, connect, docker_nodes
from stop.cluster.images import ImageRef, driver_image, prepare
from stop.cluster.local import start_local
from stop.cluster.node import EXEC_LABEL, NodeImageError, reap, run_job
from stop.cluster.relay import Relay
from stop.sandbox import open_sandbox
from stop.sandbox.execution import ExecRecorder, Sandbox, check_job, error_result, report
from stop.sandbox.jobs import Job
from stop.sandbox.records import ExecLimits, ExecResult, source_hash
from stop.sandbox.rules import make_finding
from stop.sandbox.scan import scan
from stop.sandbox.services import ServiceHandler

GRACE_S = 60.0  # past the deadline: container start and teardown, the worker's own drain
ATTEMPTS = 3
NO_NODE_S = 60.0  # how long executions wait while the cluster has no docker node at all


class RaySandbox:
    """A Sandbox whose executions are Ray tasks on `docker` nodes (see the module docstring)."""

    name = "docker"  # the backend: the same containers; the executor is Ray
    executor = "ray"

    def __init__(self, session: RaySession, *, image: ImageRef | None = None,
                 runtime: str | None = None, grace_s: float = GRACE_S,
                 attempts: int = ATTEMPTS) -> None:
        self.session, self.ray = session, session.ray
        self.runtime = runtime  # the containers' OCI runtime on the nodes (None: runc)
        self.grace_s, self.attempts = grace_s, max(1, attempts)
        self.image = image or driver_image()
        self.nodes = prepare(self.ray, self.image)
        self.relay = Relay(self.ray, self.ray.get_runtime_context().get_node_id())
        self._task = self.ray.remote(run_job)
        self._reap = self.ray.remote(reap)
        self._lock = threading.Lock()
        self._improvers: dict[str, int] = {}  # node -> improver runs in flight
        self._closed = False
        self._last_docker_node = self._checked = time.monotonic()

    # ---- one execution ----------------------------------------------------------------------

    def execute(self, job: Job, *, limits: ExecLimits, role: str,
                services: ServiceHandler | None = None,
                recorder: ExecRecorder | None = None) -> ExecResult:
        check_job(job, role)
        exec_id = secrets.token_hex(8)
        run_id = (recorder.run_id if recorder is not None else "") or ""
        rnd = recorder.context.get("round") if recorder is not None else None
        labels = {"stop.run": run_id, "stop.round": "" if rnd is None else str(rnd),
                  "stop.role": role, "stop.candidate": source_hash(job.source),
                  "stop.scope": f"{run_id or '-'}/r{rnd if rnd is not None else '-'}/{role}/"
                                f"{source_hash(job.source)}"}
        state = self.relay.register(exec_id, services)
        try:
            result, requests = self._attempts(job, limits, role, exec_id, state, labels,
                                              services is not None, run_id, rnd)
        finally:
            self.relay.unregister(exec_id)
        return report(result, role=role, limits=limits, kind=job.kind, recorder=recorder,
                      requests=requests)

    def _attempts(self, job: Job, limits: ExecLimits, role: str, exec_id: str, state: Any,
                  labels: dict[str, str], with_services: bool, run_id: str,
                  rnd: int | None) -> tuple[ExecResult, int]:
        ray = self.ray
        attempt, shipped = 0, False
        while True:
            attempt += 1
            node = None if role == "solution" else self._improver_node()
            if node is None and role != "solution":
                return error_result(job, self.name, "sandbox failure: the Ray cluster has had no "
                                    f"node with a `docker` resource for {NO_NODE_S:.0f} s"), 0
            ref = self._task.options(**self._placement(node)).remote(
                job, limits, role, tag=self.image.tag, expected_id=self.image.id,
                runtime=self.runtime, labels=labels, exec_id=exec_id, attempt=attempt,
                mailbox=self.relay.mailbox, with_services=with_services, run_id=run_id,
                round_=rnd)
            try:
                outcome = self._wait(ref, limits, state, attempt)
            finally:
                if node is not None:
                    with self._lock:
                        self._improvers[node] -= 1
            if outcome == "cancelled":
                where = state.started.get(attempt, (0.0, {}))[1]
                self._reap_everywhere({EXEC_LABEL: exec_id}, where)
                return self._overdue(job, limits, role), 0
            if outcome == "no-relay":
                return error_result(job, self.name, f"sandbox failure: {self.relay.broken}"), 0
            if outcome == "no-node":
                ray.cancel(ref, force=True)
                return error_result(job, self.name, "sandbox failure: the Ray cluster has had no "
                                    f"node with a `docker` resource for {NO_NODE_S:.0f} s"), 0
            try:
                result, requests = ray.get(ref)
                return result, requests
            except Exception as e:
                kind = self._classify(e)
                if kind == "image" and not shipped:
                    shipped = True  # a node that joined after the survey: give it the image
                    self.nodes = prepare(ray, self.image)
                    continue
                if kind == "image":
                    raise ClusterError(_cause_line(e)) from None
                if kind == "lost" and attempt < self.attempts:
                    self._reap_everywhere({EXEC_LABEL: exec_id})
                    continue
                return error_result(job, self.name, f"sandbox failure on the cluster: "
                                    f"{_cause_line(e)}"), 0

    def _placement(self, node: str | None) -> dict[str, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        common: dict[str, Any] = {"num_cpus": 0, "max_retries": 0, "retry_exceptions": False}
        if node is None:
            return {**common, "resources": {DOCKER: 1}}
        return {**common, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}

    def _improver_node(self) -> str | None:
        """The alive docker node running the fewest of this driver's improver runs (None when
        there has been none for NO_NODE_S)."""
        deadline = time.monotonic() + NO_NODE_S
        while not (ids := [n["NodeID"] for n in docker_nodes(self.ray)]):
            if time.monotonic() > deadline:
                return None
            time.sleep(1.0)
        with self._lock:
            node = min(ids, key=lambda i: (self._improvers.get(i, 0), i))
            self._improvers[node] = self._improvers.get(node, 0) + 1
        return node

    def _wait(self, ref: Any, limits: ExecLimits, state: Any, attempt: int) -> str:
        """Wait for the task; cancel it past its deadline. Returns done, cancelled or no-node."""
        ray = self.ray
        while True:
            ready, _ = ray.wait([ref], timeout=0.5)
            if ready:
                return "done"
            if self.relay.broken:
                ray.cancel(ref, force=True)
                return "no-relay"
            started = state.started.get(attempt)
            if started is not None:
                overdue = time.monotonic() - started[0] - state.service_seconds()
                if overdue > limits.wall_s + self.grace_s:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:
                        pass
                    return "cancelled"
            elif not self._docker_node_seen():
                return "no-node"

    def _docker_node_seen(self) -> bool:
        """False once the cluster has had no docker node for NO_NODE_S (checked every 5 s)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= 5.0:
                self._checked = now
                try:
                    alive = bool(docker_nodes(self.ray))
                except Exception:
                    alive = True
                if alive:
                    self._last_docker_node = now
            return now - self._last_docker_node < NO_NODE_S

    def _classify(self, e: BaseException) -> str:
        from ray import exceptions as rx

        if isinstance(e, rx.RayTaskError):
            return "image" if isinstance(getattr(e, "cause", None), NodeImageError) else "task"
        lost = tuple(getattr(rx, n) for n in (
            "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
            "LocalRayletDiedError", "RaySystemError", "ActorDiedError", "ActorUnavailableError",
            "ObjectFetchTimedOutError", "ObjectReconstructionFailedError",
            "TaskUnschedulableError") if hasattr(rx, n))
        return "lost" if isinstance(e, lost) else "task"

    def _overdue(self, job: Job, limits: ExecLimits, role: str) -> ExecResult:
        """The task outlived its deadline by the grace time and was cancelled here."""
        h = source_hash(job.source)
        findings = scan(job.source, role=role, candidate_hash=h)
        findings.append(make_finding(
            "resource-timeout", layer="container", role=role, candidate_hash=h,
            attempted=f"still running {self.grace_s:.0f} s past the {limits.wall_s}s deadline: "
                      "the task was cancelled and its container removed",
            source=job.source, limit="wall_s", wall_s=limits.wall_s))
        return ExecResult(status="timeout", value=[] if job.kind == "solve" else None,
                          signal="SIGKILL", wall_s=limits.wall_s + self.grace_s,
                          limit_fired="wall_s", backend=self.name, candidate_hash=h,
                          findings=findings)

    def _reap_everywhere(self, labels: dict[str, str], where: dict | None = None) -> None:
        """Remove a gone task's containers on every docker node (fire and forget); `where`
        (the task's node and worker pid): end that worker too, should the cancel not reach it
        (a worker stuck hard does not answer Ray's cancel)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        where = where or {}
        for n in docker_nodes(self.ray):
            pid = where.get("pid") if n["NodeID"] == where.get("node") else None
            self._reap.options(num_cpus=0, max_retries=0,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(
                                   n["NodeID"], soft=False)).remote(labels, pid)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.relay.close()
        self.session.close()


def _cause_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(cause).__name__)[:300]


def open_executor(backend: str = "docker", *, executor: str = "local",
                  address: str | None = None, pool_size: int = 0,
                  runtime: str | None = None) -> Sandbox:
    """The sandbox for a command's --executor: local (as always) or ray (--ray-address)."""
    if executor == "local":
        if address is not None:
            raise ClusterError("--ray-address needs --executor ray")
        return open_sandbox(backend, pool_size=pool_size, runtime=runtime)
    if executor != "ray":
        raise ClusterError(f"unknown executor {executor!r}: choose local or ray")
    if backend != "docker":
        raise ClusterError("--executor ray runs Docker containers on the nodes; "
                           f"--sandbox {backend} is for local runs only")
    session = start_local() if address is None else connect(address)
    try:
        return RaySandbox(session, runtime=runtime)
    except BaseException:
        session.close()
        raise
