"""Helpers of the cluster tests: the scripted run of tests/core/test_loop.py, what a run must
reproduce, and the sockets of this process tree (which must all stay on loopback)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

from stop.runs.summary import summarize

FIX = Path(__file__).parents[1] / "fixtures" / "loop"
IMPROVERS = ("better", "worse", "crash", "hang")
SETTINGS = {"rounds": 2, "n_tests": 1, "lm_budget": 1, "max_responses_per_call": 2,
            "utility_budget": 3, "meta_lm_budget": 1, "meta_max_responses_per_call": 4,
            "meta_utility_budget": 5, "improver_wall_s": 20, "self_improve_wall_s": 300, "jobs": 2}


def fenced(name: str) -> str:
    return f"Here is the new program.\n```python\n{(FIX / name).read_text()}```\n"


def script() -> list[dict]:
    return [{"match": "def improve_algorithm",
             "texts": [fenced(f"improver_{n}.py") for n in IMPROVERS]},
            {"match": None, "texts": [fenced("lpn_two_bits.py"), fenced("lpn_zeros.py")]}]


def write_script(folder: Path) -> Path:
    path = folder / "script.json"
    path.write_text(json.dumps({"replies": script()}))
    return path


def final_state(run) -> dict:
    """What the same run on another executor must reproduce: decisions, scores, improvers."""
    s = summarize(run)
    rows = [{k: r[k] for k in ("round", "adopted", "reason", "incumbent_hash", "candidate_hash",
                                "kept_hash", "incumbent", "candidate", "model_calls")}
            for r in s["round_table"]]
    improvers = {p.name: p.read_text() for p in sorted((run.dir / "improvers").glob("*.py"))}
    return {"rounds": rows, "status": s["status"], "best": s["best"], "improvers": improvers,
            "candidates": sorted(p.name for p in (run.dir / "candidates").glob("*.py"))}


def run_args(script_file: Path, *extra: str) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in SETTINGS.items() if k != "rounds"]
    return ["run", "--quiet", "--rounds", str(SETTINGS["rounds"]), "--model",
            f"scripted:{script_file}", *sets, *extra]


def stop_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from stop.cli import main; main()", *args]


def stop(*args: str, env: dict, timeout: float = 900,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(stop_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def containers(**labels: str) -> list[str]:
    """Ids of stop's containers (any state) carrying all these labels."""
    filters = ["--filter", "label=stop.sandbox"]
    for k, v in labels.items():
        filters += ["--filter", f"label={k}={v}"]
    r = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True,
                       timeout=60)
    return r.stdout.split()


# ---- sockets of this process and every process it started (the Ray nodes are among them) ----

def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, todo = {root}, [root]
    while todo:
        cur = todo.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == cur and pid not in found]
        found.update(kids)
        todo += kids
    return found


def _addr(hexaddr: str) -> str:
    host, port = hexaddr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return f"{ip}:{int(port, 16)}"


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.rsplit(":", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def inet_sockets(root: int | None = None) -> list[tuple[int, str, str, str]]:
    """(pid, protocol, local, remote) of every TCP/UDP socket of `root` and its descendants."""
    pids = _descendants(root or os.getpid())
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes:
                out.append((inodes[f[9]], proto, _addr(f[1]), _addr(f[2])))
    return out


def outside_loopback(sockets: list[tuple[int, str, str, str]]) -> list[tuple[int, str, str, str]]:
    """Sockets bound to or connected to anything but loopback (an unconnected remote end,
    0.0.0.0:0 or [::]:0, is fine; a wildcard local address is not)."""
    bad = []
    for s in sockets:
        _, _, local, remote = s
        remote_ip = ipaddress.ip_address(remote.rsplit(":", 1)[0])
        remote_ok = remote_ip.is_unspecified or _is_loopback(remote)
        if not _is_loopback(local) or not remote_ok:
            bad.append(s)
    return bad
