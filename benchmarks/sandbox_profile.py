"""Where a pooled container's cost goes: every phase of a sandboxed execution, timed.

A DockerSandbox whose engine API calls and execution phases are wrapped with timers. The
critical path of one pooled execution (what the caller waits for) is split into: taking a
container from the pool and checking it is alive, attaching, job -> hello (the harness reads
the job, sets up its channel and tripwires), hello -> done (the candidate runs), the wait after
the closing frame, and reading the engine's state. The background work that the pool moves off
that path is timed per engine call (create, start, remove), and the CPU the engine's daemons
and the containers themselves burned is read from /proc and the cgroup accounting.

Used by bench_sandbox.py --profile; import it from there.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from stop.sandbox.docker import DockerSandbox

CLK = os.sysconf("SC_CLK_TCK")
API_CALLS = ("create_container", "start", "attach_socket", "inspect_container",
             "remove_container", "kill", "wait")


class Timings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.samples[name].append(seconds)

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for name, xs in self.samples.items():
            rows.append({"what": name, "n": len(xs),
                         "mean_ms": round(1000 * statistics.fmean(xs), 2),
                         "median_ms": round(1000 * statistics.median(xs), 2)})
        return rows


class ProfiledSandbox(DockerSandbox):
    """The real Docker backend, with timers around its engine calls and execution phases."""

    def __init__(self, *a: Any, **k: Any) -> None:
        self.t = Timings()
        super().__init__(*a, **k)
        for name in API_CALLS:
            real = getattr(self.api, name)
            setattr(self.api, name, self._timed(f"api.{name}", real))

    def _timed(self, name: str, fn: Any) -> Any:
        def wrapped(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t.add(name, time.perf_counter() - t0)
        return wrapped

    def _acquire_attached(self, limits: Any) -> Any:
        t0 = time.perf_counter()
        out = super()._acquire_attached(limits)
        self.t.add("path: take + check + attach", time.perf_counter() - t0)
        return out

    def _pump(self, sock: Any, ex: Any, t0: float, cid: str) -> bool:
        marks: dict[str, float] = {}
        real = ex.session._frame

        def frame(line: bytes) -> None:
            real(line)
            now = time.perf_counter()
            if ex.session.hello and "hello" not in marks:
                marks["hello"] = now
            if ex.session.done is not None and "done" not in marks:
                marks["done"] = now

        ex.session._frame = frame
        start = time.perf_counter()
        try:
            return super()._pump(sock, ex, t0, cid)
        finally:
            end = time.perf_counter()
            if "hello" in marks and "done" in marks:
                self.t.add("path: job -> hello (harness setup)", marks["hello"] - start)
                self.t.add("path: hello -> done (candidate)", marks["done"] - marks["hello"])
                self.t.add("path: done -> end of stderr", end - marks["done"])

    def execute(self, *a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super().execute(*a, **k)
        finally:
            self.t.add("path: whole execution", time.perf_counter() - t0)


def _pids(name: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == name:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def _proc_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK  # incl. reaped children


def machine_cpu_s() -> float:
    """CPU seconds of all work on the machine so far: user, nice, system, irq and softirq (not
    idle or iowait, nor steal, which is the hypervisor's)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / CLK


def _cgroup_cpu() -> float | None:
    p = Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")
    try:
        return int(p.read_text()) / 1e9
    except OSError:
        return None


class CpuMeter:
    """CPU used, between start() and stop(), per candidate: by the engine's daemons, by the
    per-container shims with the children they reaped (runc, and the container's own processes,
    which the cgroup counts too; sampled every 50 ms while they live, so a little of each shim's
    last moments is missed), by the containers (cgroup accounting), by this process, and by the
    whole machine (which includes other work on it)."""

    def start(self) -> None:
        self.daemons = {n: _pids(n) for n in ("dockerd", "containerd")}
        self.shims: dict[int, float] = {}
        self._base = {pid: _proc_cpu(pid) for pid in _pids("containerd-shim")}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.a = self._read()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in _pids("containerd-shim"):
                self.shims[pid] = _proc_cpu(pid) - self._base.get(pid, 0.0)
            time.sleep(0.05)

    def _read(self) -> dict[str, float | None]:
        t = os.times()
        out: dict[str, float | None] = {n: sum(_proc_cpu(p) for p in pids)
                                        for n, pids in self.daemons.items()}
        out["containers (cgroup)"] = _cgroup_cpu()
        out["this process"] = t.user + t.system + t.children_user + t.children_system
        out["machine (all work)"] = machine_cpu_s()
        return out

    def stop(self, n: int) -> dict[str, float | None]:
        b = self._read()
        self._stop.set()
        self._sampler.join()
        out = {k: (None if self.a[k] is None or b[k] is None
                   else round(1000 * (b[k] - self.a[k]) / n, 1)) for k in b}
        out["shims + reaped children"] = round(1000 * sum(self.shims.values()) / n, 1)
        return out
