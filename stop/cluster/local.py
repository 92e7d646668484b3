"""Several Ray nodes on this one machine: a head and N `docker` workers sharing the local Docker
engine, for the tests and the benchmark (and to try the cluster executor without a cluster).

Every node listens on 127.0.0.1 only (Ray's loopback mode), token authentication is on with a
fresh token, there is no dashboard, and the nodes start from an environment without secrets.
The head has no CPU and no `docker` resource, so all work lands on the workers, and the driver
(attached to the head) survives the removal of any worker.

`ray.init()` ties the head's processes to the driver's life, but two of its helpers (the
dashboard and runtime-env agents) outlive a driver killed with SIGKILL. `LeftBehind` records
their process ids and start times when a local instance starts, and the next local start ends
exactly those processes if their driver is gone (a recycled pid is recognised by its start time).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from stop.cluster.connect import (
    DOCKER,
    DRIVER_OPTIONS,
    LOOPBACK_ENV,
    NAMESPACE,
    ClusterError,
    RaySession,
    connect,
    errors_to_stderr,
    first_line,
    import_ray,
    loopback_mode,
    refresh_auth,
    scrubbed_environ,
)
from stop.fsutil import pid_alive
from stop.paths import cache_dir

NODE_OBJECT_STORE = 100 * 1024 * 1024
LOCAL_OBJECT_STORE = 256 * 1024 * 1024


def start_local(docker_slots: int | None = None) -> RaySession:
    """Start a single-node Ray instance for this driver: loopback only, a fresh token, no
    dashboard, no secrets in its environment, `docker_slots` sandbox slots (default: one per
    CPU). `RaySession.close()` stops it."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return connect(sys.modules["ray"].get_runtime_context().gcs_address)
    loopback_token_env()
    ray = import_ray()
    refresh_auth(ray)
    loopback_mode(ray)
    left = LeftBehind()
    left.end_stale()
    cpus = max(1, os.cpu_count() or 1)
    with scrubbed_environ():
        try:
            # address="local": a new instance even where RAY_ADDRESS names a running one
            ray.init(address="local", num_cpus=cpus, resources={DOCKER: docker_slots or cpus},
                     object_store_memory=LOCAL_OBJECT_STORE, _node_ip_address="127.0.0.1",
                     include_dashboard=False, **DRIVER_OPTIONS)
        except Exception as e:
            raise ClusterError(f"could not start a local Ray instance: {first_line(e)}") from None
    errors_to_stderr(ray)
    left.remember(ray)
    session = RaySession(ray, ray.get_runtime_context().gcs_address, local=True, owned=True)
    session.on_close = left.forget
    return session


def loopback_token_env() -> None:
    """The settings a loopback cluster and its drivers share, set before Ray is imported."""
    os.environ[LOOPBACK_ENV] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


class LocalCluster:
    """A head (no CPU, no docker) and `workers` nodes of `cpus` CPUs and `slots` docker slots."""

    def __init__(self, workers: int = 2, *, cpus: int = 1, slots: int = 1,
                 connect: bool = True) -> None:
        loopback_token_env()
        ray = import_ray()
        refresh_auth(ray)
        loopback_mode(ray)
        from ray.cluster_utils import Cluster

        self.ray = ray
        with scrubbed_environ():
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1",
                "object_store_memory": NODE_OBJECT_STORE})
            try:
                self.workers = [self.add_worker(cpus=cpus, slots=slots) for _ in range(workers)]
                self.cluster.wait_for_nodes()
            except BaseException:
                self.cluster.shutdown()
                raise
        self.address = self.cluster.address
        if connect:
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False)
            errors_to_stderr(ray)

    def add_worker(self, *, cpus: int = 1, slots: int = 1,
                   env: dict[str, str] | None = None) -> Any:
        with scrubbed_environ():
            node = self.cluster.add_node(num_cpus=cpus, resources={DOCKER: slots},
                                         node_ip_address="127.0.0.1",
                                         object_store_memory=NODE_OBJECT_STORE,
                                         env_vars=env or None)
        if hasattr(self, "workers"):
            self.workers.append(node)
        return node

    def remove_worker(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        if node in self.workers:
            self.workers.remove(node)

    def shutdown(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()
        self.cluster.shutdown()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22: start time in clock ticks


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(p.name))
    return out


class LeftBehind:
    """Process ids of a local Ray instance's helpers, kept on disk while its driver lives."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or cache_dir() / "ray-local"
        self.path = self.folder / f"{os.getpid()}.json"

    def remember(self, ray: Any) -> None:
        node = ray._private.worker._global_node
        pids = [p.process.pid for procs in node.all_processes.values() for p in procs
                if getattr(p, "process", None) is not None]
        helpers = [c for p in pids for c in _children(p)]
        entries = [{"pid": p, "start": _start_time(p)} for p in pids + helpers]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"driver": os.getpid(),
                                             "driver_start": _start_time(os.getpid()),
                                             "processes": entries}))
        except OSError:
            pass  # a read-only cache only loses this cleanup

    def forget(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass

    def end_stale(self) -> int:
        """End the recorded processes of local instances whose driver is gone."""
        ended = 0
        for f in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                data = json.loads(f.read_text())
                driver = int(data["driver"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if pid_alive(driver) and _start_time(driver) == data.get("driver_start"):
                continue
            for e in data.get("processes", []):
                pid = e.get("pid")
                if isinstance(pid, int) and e.get("start") and _start_time(pid) == e["start"]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        ended += 1
                    except OSError:
                        pass
            try:
                f.unlink()
            except OSError:
                pass
        return ended
