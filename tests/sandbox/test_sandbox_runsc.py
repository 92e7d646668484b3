"""The Docker backend under gVisor (runsc), on the real engine: every flag and limit of runc
holds, outcomes are read back the same way, and the whole adversarial suite passes.

The test set-up registers runsc (scripts/setup.sh --for test runs the gvisor step), so these
tests fail, not skip, when the engine lacks it, unless STOP_ALLOW_SKIP=1 is set.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from stop.reports.audit import FindingQuery, collect
from stop.runs.store import RunStore
from stop.sandbox import SolveJob
from stop.sandbox.canaries import load_canaries, run_canary
from stop.sandbox.docker import _pool_key
from stop.sandbox.records import ExecLimits
from stop.sandbox.runtimes import canary_expectations, host_pids

pytestmark = pytest.mark.docker
CANARIES = load_canaries()


def _need_runsc(api) -> None:
    runtimes = (api.info() or {}).get("Runtimes") or {}
    if "runsc" in runtimes:
        return
    msg = ("the Docker engine has no runsc runtime: bash scripts/setup.sh --only gvisor "
           "(or set STOP_ALLOW_SKIP=1 to skip)")
    if os.environ.get("STOP_ALLOW_SKIP") == "1":
        pytest.skip(msg)
    pytest.fail(msg)


@pytest.fixture(scope="module")
def runsc():
    import docker

    _need_runsc(docker.from_env(timeout=30).api)
    from stop.sandbox.docker import DockerSandbox

    sb = DockerSandbox(runtime="runsc")
    yield sb
    sb.close()


def solve(sb, source, calls=([],), *, per_call_s=5.0, limits=None, recorder=None):
    job = SolveJob(textwrap.dedent(source), [list(c) for c in calls], per_call_s=per_call_s)
    return sb.execute(job, limits=limits or ExecLimits(wall_s=20), role="solution",
                      recorder=recorder)


def test_the_pool_is_keyed_by_runtime():
    assert _pool_key(ExecLimits(), "runc") != _pool_key(ExecLimits(), "runsc")
    assert _pool_key(ExecLimits(), "runsc") == _pool_key(ExecLimits(), "runsc")


def test_engine_config_under_runsc(runsc):
    limits = ExecLimits(memory_mb=200, pids=32, cpus=0.5, nofile=100, fsize_mb=4, tmpfs_mb=8)
    cid = runsc._create(limits)
    try:
        info = runsc.api.inspect_container(cid)
        quota = Path(f"/sys/fs/cgroup/cpu/docker/{cid}/cpu.cfs_quota_us")
        host_quota = int(quota.read_text()) if quota.exists() else None
    finally:
        runsc._remove(cid)
    h, c = info["HostConfig"], info["Config"]
    assert h["Runtime"] == "runsc"
    assert h["NetworkMode"] == "none" and h["ReadonlyRootfs"] and h["IpcMode"] == "none"
    assert h["CapDrop"] == ["ALL"] and "no-new-privileges" in h["SecurityOpt"]
    assert h["Memory"] == h["MemorySwap"] == 200 * 1024 * 1024
    assert h["NanoCpus"] == 500_000_000 and h["Init"] is True
    assert host_quota in (None, 50_000)  # the engine's CPU quota applies to the whole sandbox
    assert h["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=8m"}
    # The engine's pids limit bounds gVisor's host tasks; the candidate's 32 are RLIMIT_NPROC.
    assert h["PidsLimit"] == host_pids("runsc", 32) > 32
    ul = {u["Name"]: u["Hard"] for u in h["Ulimits"]}
    assert ul == {"nofile": 100, "fsize": 4 * 1024 * 1024, "core": 0, "nproc": 32}
    assert not h.get("Binds") and not info["Mounts"] and not h.get("Privileged")
    assert c["User"] == "65534:65534" and c["Cmd"][:2] == ["python3", "-I"]


INSIDE = """
import os, resource, socket
def algorithm():
    def read(p):
        try:
            with open(p) as f:
                return f.read()
        except OSError as e:
            return "ERR " + type(e).__name__
    status = read("/proc/self/status")
    cap = [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")][0]
    mounts = read("/proc/mounts").splitlines()
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
    return {"uid": os.getuid(), "gid": os.getgid(), "cap": cap,
            "tmp": [l for l in mounts if " /tmp " in l][0],
            "root": [l for l in mounts if l.split()[1] == "/"][0], "root_write": root_write,
            "net": net, "ifaces": sorted(os.listdir("/sys/class/net")), "env": dict(os.environ),
            "init": read("/proc/1/cmdline"), "docker_sock": os.path.exists("/var/run/docker.sock"),
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)}
"""


def test_the_container_is_hardened_as_seen_from_inside_gvisor(runsc):
    r = solve(runsc, INSIDE)
    assert r.status == "ok" and r.runtime == "runsc", r.stderr
    v = r.value[0]["value"]
    assert (v["uid"], v["gid"]) == (65534, 65534) and v["cap"] == "0000000000000000"
    # gVisor's root is its gofer's 9p mount, read-only; /tmp is its own tmpfs, noexec, 64 MB
    # (gVisor lists only the options it implements: nosuid is moot under no-new-privileges and
    # nodev under no CAP_MKNOD).
    assert v["root"].split()[2] == "9p" and " ro," in v["root"]
    assert "noexec" in v["tmp"] and "size=64m" in v["tmp"]
    assert v["root_write"] in ("OSError", "PermissionError")
    assert v["net"] != "connected" and v["ifaces"] == ["lo"]
    assert v["env"] == {} and not v["docker_sock"] and "docker-init" in v["init"]
    assert v["nproc"] == (64, 64) and v["nofile"] == (256, 256)
    assert v["fsize"] == (16 * 2**20, 16 * 2**20)
    assert {f.rule for f in r.findings} >= {"network"}
    assert all(f.runtime == "runsc" for f in r.findings)


def test_limits_hold_under_gvisor(runsc):
    r = solve(runsc, """
        import os, threading, time
        def algorithm(what):
            if what == "threads":
                n = 0
                try:
                    while n < 1000:
                        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                        n += 1
                except RuntimeError:
                    pass
                return n
            if what == "file":
                try:
                    with open("/tmp/big", "wb") as f:
                        f.write(b"x" * (20 * 2**20))
                except OSError as e:
                    return e.errno
            if what == "fds":
                fds = []
                try:
                    while True:
                        fds.append(os.open("/dev/null", os.O_RDONLY))
                except OSError as e:
                    for fd in fds:
                        os.close(fd)
                    return [e.errno, len(fds)]
            if what == "exec":
                open("/tmp/x.sh", "w").write("#!/bin/sh\\n")
                os.chmod("/tmp/x.sh", 0o755)
                try:
                    os.execv("/tmp/x.sh", ["/tmp/x.sh"])
                except OSError as e:
                    return e.errno
        """, [["threads"], ["file"], ["fds"], ["exec"]])
    assert r.status == "ok", r.stderr
    threads, fsize, fds, noexec = [c["value"] for c in r.value]
    assert 50 <= threads < 64  # capped: the harness's own threads count too
    assert fsize == 27  # EFBIG at the 16 MB file-size limit
    assert fds[0] == 24 and fds[1] < 256  # EMFILE at nofile
    assert noexec == 13  # EACCES: /tmp is noexec
    assert "resource-pids" in {f.rule for f in r.findings}


def test_outcomes_are_read_back_from_the_engine_under_gvisor(runsc):
    oom = solve(runsc, """
        def algorithm():
            x = []
            while True:
                x.append(bytearray(32 * 2**20))
        """, limits=ExecLimits(wall_s=20, memory_mb=200))
    assert oom.status == "oom" and oom.oom_killed and oom.limit_fired == "memory_mb"
    killed = solve(runsc, """
        import signal
        def algorithm():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            while True:
                pass
        """, per_call_s=0.5, limits=ExecLimits(wall_s=3))
    assert killed.status == "timeout" and killed.limit_fired == "wall_s"
    assert killed.signal == "SIGKILL" and 3 <= killed.wall_s < 15
    died = solve(runsc, "import os\ndef algorithm():\n    os._exit(7)\n")
    assert died.status == "crashed" and died.exit_code == 7
    assert {f.runtime for f in oom.findings + killed.findings + died.findings} == {"runsc"}


@pytest.mark.parametrize("canary", CANARIES, ids=[c.name for c in CANARIES])
def test_canary_under_gvisor(runsc, canary):
    out = run_canary(runsc, canary)
    expected = canary_expectations(canary.name, "runsc").get("expect_status",
                                                             canary.expect_status)
    assert out.status in expected, out.problems
    assert not out.score, f"a canary scored {out.score}"
    assert out.passed, out.problems


def test_pooled_gvisor_containers_meet_every_outcome(runsc):
    from stop.sandbox.docker import DockerSandbox

    pooled = DockerSandbox(pool_size=2, runtime="runsc")
    try:
        for canary in load_canaries(["3", "4", "20", "25"]):
            out = run_canary(pooled, canary)
            assert out.passed, (canary.name, out.problems)
    finally:
        pooled.close()


def test_findings_name_their_runtime_and_audit_filters_by_it(runsc, sandbox, tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"task": "parity_noise"}, label="runtimes")
    rec = run.recorder()
    src = "import subprocess\ndef algorithm():\n    subprocess.run(['true'])\n    return 1\n"
    for sb in (sandbox, runsc):
        r = solve(sb, src, recorder=rec)
        assert r.status == "ok" and r.runtime == sb.runtime
    execs = [e for e in run.events() if e["type"] == "sandbox_exec"]
    assert [e["runtime"] for e in execs] == ["runc", "runsc"]
    for rt in ("runc", "runsc"):
        _, found = collect(store, run.id, query=FindingQuery(runtime=rt))
        assert found and {e.finding.runtime for e in found} == {rt}
        assert {e.finding.rule for e in found} == {"process-spawn"}
    _, every = collect(store, run.id)
    assert {e.finding.runtime for e in every} == {"runc", "runsc"}
