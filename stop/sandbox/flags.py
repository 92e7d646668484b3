"""The hardened flags of every sandbox container, as Docker API arguments, per runtime.

Threat model: the container is the wall, and these flags are what makes it one: no network, a
read-only root, a noexec tmpfs as the only writable place, a non-root user with no capabilities
and no-new-privileges, pids, memory (= memory + swap), CPU, descriptor, file-size and core
limits, an init process, an empty environment, no mounts (never the Docker socket). Each flag is
verified from the engine's config and from inside (tests/sandbox/test_sandbox.py, and
test_sandbox_runsc.py under gVisor). They are the same under runc and runsc except where gVisor
counts differently (stop.sandbox.runtimes says where and why).
"""

from __future__ import annotations

from typing import Any

from stop.container import protocol
from stop.sandbox.records import ExecLimits
from stop.sandbox.runtimes import host_pids, nproc_ulimit

USER = "65534:65534"


def host_config(api: Any, limits: ExecLimits, runtime: str) -> dict[str, Any]:
    """The HostConfig of one container: the hardened flags and the limits fixed at creation."""
    from docker.types import Ulimit

    fsize = limits.fsize_mb * 1024 * 1024
    ulimits = [Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
               Ulimit(name="fsize", soft=fsize, hard=fsize),
               Ulimit(name="core", soft=0, hard=0)]
    nproc = nproc_ulimit(runtime, limits.pids)
    if nproc is not None:
        ulimits.append(Ulimit(name="nproc", soft=nproc, hard=nproc))
    return api.create_host_config(
        network_mode="none", read_only=True, ipc_mode="none", init=True,
        tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={limits.tmpfs_mb}m"},
        cap_drop=["ALL"], security_opt=["no-new-privileges"],
        pids_limit=host_pids(runtime, limits.pids),
        mem_limit=f"{limits.memory_mb}m", memswap_limit=f"{limits.memory_mb}m",
        nano_cpus=int(limits.cpus * 1e9), ulimits=ulimits, runtime=runtime,
        # Output reaches the host through the attach stream only: the engine keeps no log file
        # of it (a flood would otherwise be written to the engine's disk as well).
        log_config={"type": "none", "config": {}},
    )


def harness_cmd(limits: ExecLimits, python: str = "python3",
                path: str = "/opt/stop/harness.py") -> list[str]:
    """The harness's command line: isolated Python, and the library thread count (the harness
    sets it before NumPy loads, then empties the environment)."""
    return [python, "-I", path, protocol.THREADS_ARG, str(limits.threads)]


def container_args(image: str, labels: dict[str, str], limits: ExecLimits) -> dict[str, Any]:
    """The rest of create_container's arguments: the harness as nobody, nothing inherited."""
    return {"image": image, "command": harness_cmd(limits), "user": USER, "environment": {},
            "working_dir": "/tmp", "hostname": "sandbox", "stdin_open": True, "tty": False,
            "network_disabled": True, "labels": labels}
