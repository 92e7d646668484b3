"""What runs in a Ray worker process on a `docker` node: start the container, nothing more.

Threat model: a Ray worker is trusted infrastructure, like the host process of a local run.
Candidate code never runs here: the worker drives the same hardened one-shot container a local
run uses (`DockerSandbox`: same flags, limits and image), parses its frames with the same
bridge, and relays its service requests to the driver (stop.cluster.relay); it holds no budget,
no model and no key, records nothing, and returns the `ExecResult` for the driver to record.
Containers carry labels naming their run, round, role, candidate and execution, so the driver
can reap them when their task is gone; the owner label lets any later sandbox on the node reap
those of a worker process that died.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
from typing import Any

from stop.sandbox.docker import LABEL, DockerSandbox
from stop.sandbox.execution import SandboxUnavailable
from stop.sandbox.image import image_tag
from stop.sandbox.jobs import Job
from stop.sandbox.records import ExecLimits, ExecResult
from stop.sandbox.services import ServiceError

EXEC_LABEL = "stop.exec"
_SANDBOXES: dict[str, DockerSandbox] = {}  # by image tag and runtime


class NodeImageError(Exception):
    """This node's sandbox image is missing or is not the driver's (message: one line)."""


class _Capture:
    """A recorder that keeps what the worker's execution would record, for the driver: the
    run and round stamp findings exactly as the driver's recorder will."""

    def __init__(self, run_id: str, round_: int | None) -> None:
        self.run_id = run_id
        self.context = {"round": round_} if round_ is not None else {}
        self.requests = 0

    def record(self, type: str, **fields: Any) -> None:
        if type == "sandbox_exec":
            self.requests = int(fields.get("service_requests", 0))

    def finding(self, finding: Any) -> None:
        pass


def image_id(api: Any, tag: str) -> str | None:
    try:
        return str(api.inspect_image(tag)["Id"])
    except Exception:
        return None


def worker_sandbox(tag: str, expected_id: str | None, runtime: str | None) -> DockerSandbox:
    """This worker process's sandbox on `tag`, its image checked once against the driver's."""
    sb = _SANDBOXES.get(f"{tag}|{runtime}")
    if sb is None:
        sb = DockerSandbox(image=tag, pool_size=0, runtime=runtime)
        found = image_id(sb.api, tag)
        if found is None:
            sb.close()
            raise NodeImageError(f"node {socket.gethostname()} has no image {tag}")
        if expected_id and found != expected_id:
            sb.close()
            raise NodeImageError(f"node {socket.gethostname()}: {tag} is {found[:19]}, not the "
                                 f"driver's {expected_id[:19]}")
        _SANDBOXES[f"{tag}|{runtime}"] = sb
    return sb


def run_job(job: Job, limits: ExecLimits, role: str, *, tag: str, expected_id: str | None,
            runtime: str | None, labels: dict[str, str], exec_id: str, attempt: int, mailbox: Any,
            with_services: bool, run_id: str, round_: int | None) -> tuple[ExecResult, int]:
    """The Ray task: one execution in a fresh container on this node."""
    import ray

    ctx = ray.get_runtime_context()
    mailbox.note.remote(exec_id, attempt, {"node": ctx.get_node_id(), "pid": os.getpid(),
                                           "host": socket.gethostname()})
    sb = worker_sandbox(tag, expected_id, runtime)
    sb.labels = {**labels, EXEC_LABEL: exec_id, "stop.attempt": str(attempt)}

    def relay(method: str, params: dict) -> Any:
        status, value = ray.get(mailbox.call.remote(exec_id, attempt, method, params))
        if status == "ok":
            return value
        raise ServiceError(str(value))

    capture = _Capture(run_id, round_)
    result = sb.execute(job, limits=limits, role=role, services=relay if with_services else None,
                        recorder=capture)
    return result, capture.requests


def node_info(tag: str) -> dict[str, Any]:
    """What the driver checks before a node takes work (runs on that node)."""
    import ray

    info: dict[str, Any] = {
        "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
        "ray": ray.__version__, "python": platform.python_version(),
        "sandbox_tag": image_tag(), "docker": None, "image_id": None, "error": None}
    try:
        sb = DockerSandbox(image=tag, pool_size=0)  # pings the engine, reaps stale containers
    except SandboxUnavailable as e:
        info["error"] = str(e).splitlines()[0]
        return info
    try:
        info["docker"] = sb.client.version().get("Version", "?")
        info["image_id"] = image_id(sb.api, tag)
    finally:
        sb.close()
    return info


def load_image(archive: bytes, tag: str) -> str | None:
    """Load the driver's image archive into this node's engine; the loaded image's id."""
    import docker

    client = docker.from_env(timeout=600)
    try:
        client.images.load(archive)
        return image_id(client.api, tag)
    finally:
        client.close()


def reap(labels: dict[str, str], kill_pid: int | None = None) -> int:
    """Remove this node's stop containers that carry all of `labels` (a gone task's). With
    kill_pid, first end that Ray worker process of this node (a task stuck past its deadline:
    only a process whose title is a Ray worker's is signalled)."""
    import docker

    if kill_pid is not None and _is_ray_worker(kill_pid):
        try:
            os.kill(kill_pid, signal.SIGKILL)
        except OSError:
            pass
    client = docker.from_env(timeout=60)
    try:
        filters = [LABEL] + [f"{k}={v}" for k, v in labels.items()]
        n = 0
        for c in client.api.containers(all=True, filters={"label": filters}):
            try:
                client.api.remove_container(c["Id"], force=True)
                n += 1
            except Exception:
                pass
        return n
    finally:
        client.close()


def _is_ray_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"ray::")
    except OSError:
        return False
