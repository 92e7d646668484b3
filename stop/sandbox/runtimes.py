"""Which OCI runtime runs the sandbox's containers: runc (the default) or gVisor's runsc.

Threat model: with runc the container shares the host kernel, so a kernel bug reachable through
a system call is a way out. runsc puts gVisor's user-space kernel (the Sentry, itself confined
by a strict seccomp filter on the host) between the candidate and the host: a second wall
behind the same hardened flags. Every flag of the Docker backend is passed the same way under
both; the engine must know the runtime, and a runtime it lacks is one clear line naming the fix.

gVisor is registered with the engine in /etc/docker/daemon.json (``runtimes``), merged into
what is there, with the ptrace platform (no KVM needed) and gVisor's own ``--network=none``
(without it, ``--network none`` containers fail to start under runsc). dockerd reloads its
runtimes on SIGHUP, so registering it stops nothing that runs.

``python -m stop.sandbox.runsc_setup register [--config PATH] [--runsc PATH] [--check]`` does
the merge, or only checks it (scripts/setup.sh --only gvisor calls it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from stop.sandbox.execution import SandboxUnavailable

RUNC = "runc"
RUNSC = "runsc"
RUNTIMES = (RUNC, RUNSC)
DEFAULT_RUNTIME = RUNC
ENV_VAR = "STOP_SANDBOX_RUNTIME"
SETUP_GVISOR = "bash scripts/setup.sh --only gvisor"
DAEMON_JSON = "/etc/docker/daemon.json"
# --platform=ptrace: no KVM needed. --network=none: gVisor's own network stack is off (the
# engine's --network none alone makes runsc fail to start the container). Not --oci-seccomp:
# this runsc (20221219) ignores the errno values of the engine's seccomp profile, so clone3
# fails with EPERM instead of ENOSYS and glibc cannot start a single thread. Under runsc the
# candidate's system calls are served by the Sentry, which runs under gVisor's own seccomp
# filter on the host; the engine's profile is what runc applies to the host kernel.
RUNSC_ARGS = ["--platform=ptrace", "--network=none"]


def choose(runtime: str | None = None) -> str:
    """The runtime to use: the one asked for, else $STOP_SANDBOX_RUNTIME, else runc."""
    name = (runtime or os.environ.get(ENV_VAR) or DEFAULT_RUNTIME).strip()
    if name not in RUNTIMES:
        src = "" if runtime else f" (from ${ENV_VAR})"
        raise SandboxUnavailable(f"unknown sandbox runtime {name!r}{src}: choose "
                                 f"{' or '.join(RUNTIMES)}")
    return name


def engine_runtimes(api: Any) -> list[str]:
    """The runtimes a Docker engine knows (`docker info` .Runtimes), sorted."""
    return sorted((api.info() or {}).get("Runtimes") or {})


def require(api: Any, runtime: str) -> None:
    """Refuse, in one line naming the fix, a runtime the engine does not have."""
    have = engine_runtimes(api)
    if runtime in have:
        return
    fix = SETUP_GVISOR if runtime == RUNSC else "reinstall the Docker engine"
    raise SandboxUnavailable(f"the Docker engine has no {runtime} runtime (it has "
                             f"{', '.join(have) or 'none'}): {fix}")


# ---- flags that differ by runtime ------------------------------------------------------------

def host_pids(runtime: str, pids: int) -> int:
    """The engine's --pids-limit for a candidate limit of ``pids`` tasks.

    Under runc the engine's limit counts the candidate's own tasks. Under runsc it counts
    gVisor's host tasks instead: the Sentry's threads (about 38 at rest) and one ptrace stub
    process per candidate process (about 6 host tasks each: 63 processes made 372). The Sentry
    is a Go program that dies (exit 2) when it cannot make a thread, so the candidate's limit
    there would crash the sandbox instead of refusing a fork. The candidate's tasks are capped
    by RLIMIT_NPROC instead (nproc_ulimit); the engine's limit still bounds the host's side.
    """
    return pids if runtime == RUNC else 8 * pids + 64


def nproc_ulimit(runtime: str, pids: int) -> int | None:
    """RLIMIT_NPROC for the candidate, or None. gVisor counts it per sandbox (its own kernel,
    its own users): ``pids`` tasks, threads included, then fork and thread start fail with
    EAGAIN. Under runc it would count every process of uid 65534 on the host, so it is not set
    there: the engine's pids limit does that job."""
    return pids if runtime == RUNSC else None


# ---- the adversarial suite under each runtime ------------------------------------------------

# Where the right outcome of a canary (stop/sandbox/canaries/) differs by runtime: the keys
# replace the canary's own (expect_status, expect_rules, ...); "contained" lists ESCAPED
# markers that are not escapes under that runtime. Every entry says why.
CANARY_EXPECTATIONS: dict[str, dict[str, dict[str, Any]]] = {
    RUNC: {},
    RUNSC: {
        # Under gVisor's ptrace platform each process costs the host about 10 MB (its stub
        # process and the Sentry's bookkeeping of its address space), so a fork bomb reaches
        # the 512 MB memory limit at about 48 processes, before the 64-task limit: the engine
        # OOM-kills that container and only that one. Still capped, still a finding.
        "c01_fork_bomb": {"expect_status": ["ok", "timeout", "crashed", "oom"]},
        # unshare(CLONE_NEWUSER) succeeds: gVisor implements user namespaces in its own kernel,
        # and the engine's seccomp profile (which refuses unshare under runc) is not loaded
        # inside gVisor (see RUNSC_ARGS). The namespace is one of the Sentry's: it grants no
        # capability over the host or the container's mounts (the canary's mount still
        # fails). Still a namespace finding, not an escape.
        "c14_namespaces": {"contained": ["ESCAPED: unshare"]},
    },
}


def canary_expectations(name: str, runtime: str) -> dict[str, Any]:
    """What replaces a canary's own expectations under ``runtime`` (empty: none)."""
    return dict(CANARY_EXPECTATIONS.get(runtime, {}).get(name, {}))


# ---- registering runsc with the engine -------------------------------------------------------

def runsc_entry(runsc_path: str) -> dict[str, Any]:
    return {"path": runsc_path, "runtimeArgs": list(RUNSC_ARGS)}


def merge_daemon_config(config: dict[str, Any], runsc_path: str) -> tuple[dict[str, Any], bool]:
    """`config` with runsc in its runtimes; every other key and runtime kept. True if changed."""
    if not isinstance(config, dict):
        raise ValueError("the engine's configuration is not a JSON object")
    runtimes = config.get("runtimes", {})
    if not isinstance(runtimes, dict):
        raise ValueError("its \"runtimes\" is not a JSON object")
    want = runsc_entry(runsc_path)
    if runtimes.get(RUNSC) == want:
        return config, False
    return {**config, "runtimes": {**runtimes, RUNSC: want}}, True


def registered(config_path: str | Path = DAEMON_JSON, runsc_path: str = "/usr/bin/runsc"
               ) -> bool:
    """Whether daemon.json already names runsc with this path and these arguments."""
    try:
        current = json.loads(Path(config_path).read_text() or "{}")
        return not merge_daemon_config(current, runsc_path)[1]
    except (OSError, ValueError):
        return False


def register_runsc(config_path: str | Path = DAEMON_JSON, runsc_path: str = "/usr/bin/runsc"
                   ) -> bool:
    """Merge runsc into the engine's daemon.json (written atomically). True if it changed.

    A file that is not a JSON object is left alone and refused: clobbering it could stop the
    engine from starting.
    """
    path = Path(config_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    try:
        current = json.loads(text) if text.strip() else {}
        merged, changed = merge_daemon_config(current, runsc_path)
    except (json.JSONDecodeError, ValueError) as e:
        raise SandboxUnavailable(f"{path}: cannot add runsc, the file is not a valid engine "
                                 f"configuration ({e}); fix it by hand") from None
    if not changed:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".daemon.json.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f, indent=2)
            f.write("\n")
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
