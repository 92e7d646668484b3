"""The Docker backend on the real engine: flags, outcomes, limits, cleanup, the pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from stop.container.codec import Opaque

from stop.runs.recorders import NullRecorder
from stop.sandbox import ImproveJob, ServiceError, SolveJob
from stop.sandbox.records import ExecLimits

pytestmark = pytest.mark.docker


def solve(sandbox, source, calls, *, per_call_s=2.0, limits=None, **kw):
    job = SolveJob(textwrap.dedent(source), calls, per_call_s=per_call_s)
    return sandbox.execute(job, limits=limits or ExecLimits(wall_s=10), role="solution", **kw)


def test_values_cross_the_boundary_with_their_types(sandbox):
    r = solve(sandbox, """
        import numpy as np
        class Mine(list):
            pass
        def algorithm(x, t):
            if x == 3:
                return Mine([1])
            return {"arr": np.arange(x) * 2, "t": t, "s": np.int64(7)}
        """, [[2, (1, "a")], [3, None]])
    assert r.status == "ok", r.stderr
    first = r.value[0]["value"]
    assert (first["arr"] == np.array([0, 2])).all() and first["t"] == (1, "a")
    assert first["s"] == 7 and isinstance(first["s"], np.integer)
    assert isinstance(r.value[1]["value"], Opaque)


INSIDE = """
import os, socket
def algorithm():
    def read(p):
        try:
            with open(p) as f:
                return f.read()
        except OSError as e:
            return "ERR " + type(e).__name__
    status = read("/proc/self/status")
    cap = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")][0]
    nnp = [l.split()[1] for l in status.splitlines() if l.startswith("NoNewPrivs")][0]
    mounts = read("/proc/mounts")
    tmp = [l for l in mounts.splitlines() if " /tmp " in l][0]
    root = [l for l in mounts.splitlines() if l.split()[1] == "/"][0]
    try:
        open("/etc/x", "w")
        root_write = "ok"
    except OSError as e:
        root_write = type(e).__name__
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1)
        net = "connected"
    except OSError as e:
        net = type(e).__name__
    return {"uid": os.getuid(), "gid": os.getgid(), "cap": cap, "nnp": nnp, "tmp": tmp,
            "root": root, "root_write": root_write, "net": net,
            "ifaces": read("/proc/net/dev"), "env": dict(os.environ),
            "init": read("/proc/1/cmdline"), "docker_sock": os.path.exists("/var/run/docker.sock")}
"""


def test_the_container_is_hardened_as_seen_from_inside(sandbox):
    r = solve(sandbox, INSIDE, [[]])
    assert r.status == "ok", r.stderr
    v = r.value[0]["value"]
    assert r.value[0]["status"] == "ok", r.value
    assert (v["uid"], v["gid"]) == (65534, 65534)
    assert v["cap"] == "0000000000000000" and v["nnp"] == "1"
    assert "noexec" in v["tmp"] and "nosuid" in v["tmp"] and "nodev" in v["tmp"]
    assert " ro," in v["root"] or " ro " in v["root"]
    assert v["root_write"] in ("OSError", "PermissionError")
    assert v["net"] != "connected"
    assert [ln.split(":")[0].strip() for ln in v["ifaces"].splitlines()[2:]] == ["lo"]
    assert v["env"] == {} and not v["docker_sock"]
    assert "docker-init" in v["init"]
    assert {f.rule for f in r.findings} >= {"network"}


THREADS = """
import os
def algorithm():
    return {"tasks": len(os.listdir("/proc/self/task")), "env": dict(os.environ)}
"""


def test_library_thread_pools_are_as_wide_as_the_cpu_limit(sandbox):
    # NumPy's OpenBLAS would start a thread per host core; the harness sizes it to the limit
    # before NumPy loads, and the candidate still sees an empty environment.
    seen = {}
    for cpus in (1, 2):
        r = solve(sandbox, THREADS, [[]], limits=ExecLimits(wall_s=10, cpus=cpus))
        assert r.status == "ok", r.stderr
        seen[cpus] = r.value[0]["value"]
        assert seen[cpus]["env"] == {}
    assert seen[2]["tasks"] == seen[1]["tasks"] + 1


def test_engine_config_has_every_hardening_flag(sandbox):
    limits = ExecLimits(memory_mb=200, pids=32, cpus=0.5, nofile=100, fsize_mb=4, tmpfs_mb=8)
    cid = sandbox._create(limits)
    try:
        info = sandbox.api.inspect_container(cid)
    finally:
        sandbox._remove(cid)
    h, c = info["HostConfig"], info["Config"]
    assert h["NetworkMode"] == "none" and h["ReadonlyRootfs"] and h["IpcMode"] == "none"
    assert h["CapDrop"] == ["ALL"] and "no-new-privileges" in h["SecurityOpt"]
    assert h["PidsLimit"] == 32 and h["Memory"] == h["MemorySwap"] == 200 * 1024 * 1024
    assert h["NanoCpus"] == 500_000_000 and h["Init"] is True
    assert h["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=8m"}
    ul = {u["Name"]: u["Hard"] for u in h["Ulimits"]}
    assert ul == {"nofile": 100, "fsize": 4 * 1024 * 1024, "core": 0}
    assert not h.get("Binds") and not info["Mounts"] and not h.get("Privileged")
    assert c["User"] == "65534:65534" and c["Cmd"][:2] == ["python3", "-I"]
    assert c["Cmd"][-2:] == ["--threads", "1"]
    assert not any(e.split("=")[0] not in ("PATH", "HOSTNAME") for e in c.get("Env") or [])


def test_deadline_kill_keeps_the_results_already_streamed(sandbox):
    r = solve(sandbox, """
        import signal
        def algorithm(x):
            if x == 1:
                signal.signal(signal.SIGALRM, signal.SIG_IGN)
                while True:
                    pass
            return x * 10
        """, [[0], [1], [2]], per_call_s=0.5, limits=ExecLimits(wall_s=3))
    assert r.status == "timeout" and r.limit_fired == "wall_s" and r.signal == "SIGKILL"
    assert [c["value"] for c in r.value] == [0]
    assert 3 <= r.wall_s < 10


def test_per_call_limit_inside_the_harness(sandbox):
    r = solve(sandbox, """
        import time
        def algorithm(x):
            time.sleep(x)
            return x
        """, [[0], [5], [0]], per_call_s=0.5)
    assert r.status == "ok"
    assert [c["status"] for c in r.value] == ["ok", "timeout", "ok"]


def test_load_errors_fail_every_call(sandbox):
    r = solve(sandbox, "def algorithm(:\n", [[1], [2]])
    assert r.status == "ok" and [c["status"] for c in r.value] == ["error", "error"]
    assert "SyntaxError" in r.value[0]["error"]


def test_service_errors_reach_the_candidate_and_events_are_recorded(sandbox):
    def handler(method, params):
        raise ServiceError("no budget left")

    src = ("def improve_algorithm(s, utility, language_model):\n"
           "    try:\n        utility(s)\n    except Exception as e:\n"
           "        return type(e).__name__ + ': ' + str(e)\n")
    rec = NullRecorder()
    job = ImproveJob(source=src, initial_solution="x", description="d", utility_budget=1,
                     lm_budget=1, max_responses_per_call=6)
    r = sandbox.execute(job, limits=ExecLimits(), role="improver", services=handler,
                        recorder=rec)
    assert r.value == {"returned": "ServiceError: no budget left"}
    ev = [e for e in rec.events if e["type"] == "sandbox_exec"]
    assert len(ev) == 1 and ev[0]["status"] == "ok" and ev[0]["role"] == "improver"
    assert ev[0]["limits"]["wall_s"] == ExecLimits().wall_s and ev[0]["service_requests"] == 1


def test_static_and_runtime_findings_are_linked(sandbox):
    rec = NullRecorder()
    r = solve(sandbox, """
        import subprocess
        def algorithm():
            subprocess.run(["true"])
            return 1
        """, [[]], recorder=rec)
    by_layer = {f.layer: f for f in r.findings if f.rule == "process-spawn" and f.line == 4}
    assert by_layer["static"].detail["linked"] == by_layer["runtime"].id
    assert by_layer["runtime"].detail["linked"] == by_layer["static"].id
    assert by_layer["runtime"].source_line == 'subprocess.run(["true"])'
    assert len(rec.findings) == len(r.findings)


def _ours(sandbox):
    from stop.sandbox.docker import LABEL, OWNER, _owner_id

    return [c for c in sandbox.api.containers(all=True, filters={"label": LABEL})
            if c["Labels"].get(OWNER) == _owner_id()]


def test_containers_are_removed_after_use(sandbox):
    for _ in range(3):
        solve(sandbox, "def algorithm():\n    return 1\n", [[]])
    deadline = time.monotonic() + 10
    while _ours(sandbox) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ours(sandbox) == []


def test_containers_of_a_dead_process_are_reaped(sandbox):
    from stop.sandbox.docker import LABEL, OWNER, _owner_id

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    host = _owner_id().rpartition(":")[0]
    c = sandbox.api.create_container(sandbox.image, command=["true"],
                                     labels={LABEL: "1", OWNER: f"{host}:{p.pid}"})
    assert sandbox.reap_stale() >= 1
    ids = [x["Id"] for x in sandbox.api.containers(all=True, filters={"label": LABEL})]
    assert c["Id"] not in ids


INTERRUPTED = """
import sys
from stop.sandbox.docker import DockerSandbox
from stop.sandbox.jobs import SolveJob
from stop.sandbox.records import ExecLimits
sb = DockerSandbox()
print("ready", flush=True)
sb.execute(SolveJob("def algorithm():\\n    while True:\\n        pass\\n", [[]]),
           limits=ExecLimits(wall_s=60), role="solution")
"""


def test_an_interrupted_host_process_leaves_no_container(sandbox):
    from stop.sandbox.docker import LABEL, OWNER

    p = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    host = os.uname().nodename

    def theirs():
        return [c for c in sandbox.api.containers(all=True, filters={"label": LABEL})
                if c["Labels"].get(OWNER) == f"{host}:{p.pid}"]

    deadline = time.monotonic() + 20
    while not theirs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert theirs(), "the child never started its container"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    assert theirs() == []


def test_pool_containers_serve_exactly_one_execution_with_their_own_limits():
    from stop.sandbox.docker import DockerSandbox

    sb = DockerSandbox(pool_size=2)
    src = """
        import os
        def algorithm():
            seen = os.path.exists("/tmp/marker")
            open("/tmp/marker", "w").close()
            mem = "?"
            for p in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
                try:
                    mem = open(p).read().strip()
                    break
                except OSError:
                    pass
            return [seen, mem]
        """
    try:
        deadline = time.monotonic() + 20
        while len(sb._pool.get(next(iter(sb._pool), ()), ())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        results = [solve(sb, src, [[]]) for _ in range(4)]
        small = solve(sb, src, [[]], limits=ExecLimits(memory_mb=96))
        par: list = []
        threads = [threading.Thread(target=lambda: par.append(solve(sb, src, [[]])))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sb.close()
    for r in results + par + [small]:
        assert r.status == "ok" and r.value[0]["value"][0] is False, r.value
    assert results[0].value[0]["value"][1] in (str(512 * 1024 * 1024), "?")
    assert small.value[0]["value"][1] in (str(96 * 1024 * 1024), "?")
    assert len(par) == 4


def test_a_replaced_alarm_handler_is_reported_and_restored(sandbox):
    r = solve(sandbox, """
        import signal
        def algorithm(x):
            if x == 0:
                signal.signal(signal.SIGALRM, signal.SIG_IGN)
                return 0
            while True:
                pass
        """, [[0], [1]], per_call_s=0.5)
    assert r.status == "ok" and [c["status"] for c in r.value] == ["ok", "timeout"]
    assert any(f.rule == "signal-tamper" and f.layer == "runtime" for f in r.findings)


def test_closing_the_streams_does_not_outlive_the_deadline(sandbox):
    r = solve(sandbox, """
        import os, time
        def algorithm():
            os.closerange(0, 1024)
            time.sleep(3600)
        """, [[]], per_call_s=0, limits=ExecLimits(wall_s=3))
    assert r.status == "timeout" and r.wall_s < 8


ORPHANED = """
import sys
from stop.sandbox.docker import DockerSandbox
from stop.sandbox.jobs import SolveJob
from stop.sandbox.records import ExecLimits
sb = DockerSandbox()
print("ready", flush=True)
sb.execute(SolveJob("import time\\ndef algorithm():\\n    time.sleep(3600)\\n", [[]]),
           limits=ExecLimits(wall_s=600), role="solution")
"""


def test_a_container_whose_host_died_stops_by_itself(sandbox):
    """Dead-man switch: SIGKILL of the host closes the channel; the container ends at once."""
    from stop.sandbox.docker import LABEL, OWNER

    p = subprocess.Popen([sys.executable, "-c", ORPHANED], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    owner = f"{os.uname().nodename}:{p.pid}"

    def theirs(**filters):
        return [c for c in sandbox.api.containers(all=True, filters={"label": LABEL, **filters})
                if c["Labels"].get(OWNER) == owner]

    deadline = time.monotonic() + 20
    while not theirs(status="running") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert theirs(status="running")
    time.sleep(1.0)
    p.kill()
    p.wait()
    deadline = time.monotonic() + 10
    while theirs(status="running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert theirs(status="running") == []
    sandbox.reap_stale()
    assert theirs() == []


def test_a_pooled_container_that_died_while_waiting_is_replaced():
    from stop.sandbox.docker import DockerSandbox

    sb = DockerSandbox(pool_size=1)
    try:
        deadline = time.monotonic() + 20
        while not sb._pool.get(next(iter(sb._pool), ()), None) and time.monotonic() < deadline:
            time.sleep(0.1)
        (waiting,) = next(iter(sb._pool.values()))
        sb.api.kill(waiting)
        r = solve(sb, "def algorithm():\n    return 5\n", [[]])
    finally:
        sb.close()
    assert r.status == "ok" and r.value[0]["value"] == 5
