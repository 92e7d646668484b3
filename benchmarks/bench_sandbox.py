"""Sandboxed evaluation throughput: the cost of running every candidate in a fresh container.

One run, several ways of evaluating the same batch of distinct LPN solutions (each on a few
validation instances, scored on the host):

  in-process         exec() in the orchestrator (unsafe; what the original STOP code does)
  subprocess         a bare `python` child per candidate (no isolation at all)
  subprocess-1t      the same with one BLAS/OpenMP thread, as the harness runs NumPy
  docker-cold        a fresh hardened container per candidate, started on demand (runc)
  docker-pool        a fresh hardened container per candidate, pre-started by the pool (runc)
  runsc-cold         the same under gVisor's runsc (when the engine has it)
  runsc-pool         the pool under runsc

Usage: python benchmarks/bench_sandbox.py [--n 200] [--instances 3] [--pool 3] [--blocks 5]
                                          [--runtimes runc,runsc] [--profile N] [--latency K]
The modes run interleaved, in --blocks slices each, so other work on the machine weighs on all
of them alike; a Docker mode's slice is timed until its containers are removed and its pool is
full again (the pool pays for every container it used). Writes benchmarks/results/sandbox.json and prints ratios and per-candidate overhead. With
--profile N it also times every phase of N pooled executions per runtime (engine calls, the
harness's start, the candidate, the wait after the closing frame) and the CPU the engine,
the shims and runc, and the containers used per candidate (sandbox_profile.py). With --latency K
it times K single candidates per mode with the pool full and the machine otherwise idle before
each: the latency a round sees when a candidate comes between two model calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SOLVERS = [
    '''import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    # variant {k}: try every parity mask, keep the one that fits the noisy labels best
    n = train_samples.shape[1]
    masks = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    fits = ((train_samples @ masks.T) % 2 == train_parity[:, None]).sum(axis=0)
    best = masks[int(np.argmax(fits))]
    return (test_samples @ best) % 2
''',
    '''import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    # variant {k}: least squares, rounded
    w = np.linalg.lstsq(train_samples, train_parity, rcond=None)[0]
    return (test_samples @ w > 0.5).astype(int)
''',
]

BARE_RUNNER = r'''
import json, sys
import numpy as np
job = json.loads(sys.stdin.read())
ns = {}
exec(compile(job["source"], "candidate.py", "exec"), ns)
out = []
for args in job["calls"]:
    value = ns["algorithm"](*[np.array(a) for a in args])
    out.append(np.asarray(value).tolist())
sys.stdout.write(json.dumps(out))
'''


def candidates(n: int) -> list[str]:
    return [SOLVERS[k % len(SOLVERS)].replace("{k}", str(k)) for k in range(n)]


def grade(task, insts, values) -> float:
    total = 0.0
    for inst, v in zip(insts, values, strict=False):
        try:
            total += float(task.scorer.score(task.scorer.check(v, inst), inst))
        except Exception:
            pass
    return total / len(insts)


def run_in_process(task, insts, sources):
    scores = []
    for src in sources:
        ns: dict = {}
        exec(compile(src, "candidate.py", "exec"), ns)
        scores.append(grade(task, insts, [ns["algorithm"](*i.args) for i in insts]))
    return scores


# What the harness sets before NumPy loads, for a container of one CPU (sandbox/harness.py).
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_subprocess(task, insts, sources, env=None):
    scores = []
    calls = [[np.asarray(a).tolist() for a in i.args] for i in insts]
    for src in sources:
        p = subprocess.run([sys.executable, "-I", "-c", BARE_RUNNER], capture_output=True,
                           input=json.dumps({"source": src, "calls": calls}).encode(),
                           timeout=60, env=env or {})
        values = [np.array(v) for v in json.loads(p.stdout)]
        scores.append(grade(task, insts, values))
    return scores


def run_sandbox(task, sandbox, sources):
    from stop.tasks.scoring import score_solution

    scores = []
    for src in sources:
        rep = score_solution(task, src, split="val", sandbox=sandbox)
        if rep.exec_status != "ok":
            raise RuntimeError(f"sandboxed evaluation failed: {rep.exec_status}")
        scores.append(rep.score)
    return scores


def settle(sb, pool: int, timeout: float = 120.0) -> None:
    """Until every container this sandbox used is removed and its pool is full again."""
    from stop.sandbox.docker import live_ids, pooled_ids

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = set(sb._attached) if sb.pool_size else set()
        waiting = sum(len(q) for q in sb._pool.values())
        if not (live_ids() - pooled_ids()) and waiting >= sb.pool_size and len(mine) >= waiting:
            return
        time.sleep(0.005)
    raise RuntimeError(f"the sandbox did not settle: {len(live_ids() - pooled_ids())} used "
                       f"container(s) not removed, {waiting}/{sb.pool_size} waiting ({sb.runtime}, "
                       f"filling {sb._filling})")


def profile(task, image: str, runtime: str, pool: int, n: int, sources: list[str]) -> dict:
    """Phase timings and CPU per candidate of n pooled executions under one runtime."""
    from sandbox_profile import CpuMeter, ProfiledSandbox

    sb = ProfiledSandbox(image, pool_size=pool, runtime=runtime)
    try:
        time.sleep(3)
        run_sandbox(task, sb, sources[:2])  # warm: the first execution pays for imports
        sb.t.samples.clear()
        meter = CpuMeter()
        meter.start()
        t0 = time.perf_counter()
        run_sandbox(task, sb, sources[:n])
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # let the background teardowns of the last executions finish
        cpu = meter.stop(n)
    finally:
        sb.close()
    return {"runtime": runtime, "n": n, "per_candidate_ms": round(1000 * wall / n, 1),
            "phases": sb.t.table(), "cpu_ms_per_candidate": cpu}


def latency(runners: dict, boxes: dict, pool: int, k: int, sources: list[str]) -> dict:
    """Median ms of one candidate at a time with the machine otherwise idle: every pool is full
    and every used container removed before each (what a round sees between model calls)."""
    names = [m for m in runners if m.startswith("subprocess") or m.endswith("-pool")]
    times: dict[str, list[float]] = {m: [] for m in names}
    for i in range(k):
        for name in names:
            for sb in boxes.values():  # every pool full, no container of any mode starting
                settle(sb, pool)
            time.sleep(0.2)
            t0 = time.perf_counter()
            runners[name](sources[i:i + 1])
            times[name].append(time.perf_counter() - t0)
    return {name: round(1000 * float(np.median(xs)), 1) for name, xs in times.items()}


def print_profile(p: dict) -> None:
    print(f"\nprofile, {p['runtime']} pool: {p['n']} executions, "
          f"{p['per_candidate_ms']} ms per candidate")
    for row in sorted(p["phases"], key=lambda r: r["what"]):
        print(f"  {row['what']:<40} n={row['n']:<4} mean {row['mean_ms']:>7.1f} ms  "
              f"median {row['median_ms']:>7.1f} ms")
    print("  CPU per candidate (ms): " + ", ".join(
        f"{k} {v}" for k, v in p["cpu_ms_per_candidate"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="candidates per mode")
    ap.add_argument("--instances", type=int, default=3, help="LPN instances per candidate")
    ap.add_argument("--pool", type=int, default=3, help="pre-started containers")
    ap.add_argument("--runtimes", default="runc,runsc",
                    help="Docker runtimes to measure (runsc only where the engine has it)")
    ap.add_argument("--blocks", type=int, default=5,
                    help="slices per mode, interleaved across modes")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also time the phases of N pooled executions per runtime")
    ap.add_argument("--latency", type=int, default=0, metavar="K",
                    help="also the median time of K single candidates with the machine idle")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sandbox.json")
    args = ap.parse_args()

    import docker

    from stop.sandbox.docker import DockerSandbox
    from stop.sandbox.image import ensure_image
    from stop.sandbox.runtimes import engine_runtimes
    from stop.tasks.loader import instances, load_task

    task = dataclasses.replace(load_task("parity_noise"), n_val=args.instances)
    insts = instances(task, "val")
    sources = candidates(args.n)
    image = ensure_image()
    have = engine_runtimes(docker.from_env(timeout=30).api)
    runtimes = [r for r in args.runtimes.split(",") if r in have]
    skipped = [r for r in args.runtimes.split(",") if r not in have]
    if skipped:
        print(f"[bench] the engine has no {', '.join(skipped)}: not measured", file=sys.stderr)
    load0 = os.getloadavg()
    # Every mode runs in `--blocks` slices, interleaved (the order rotates each block), so each
    # meets the same load from other work on the machine. A Docker mode's slice is timed until
    # its containers are removed and its pool is full again: the pool is charged for every
    # container it used, the ones it started before the slice included.
    runners: dict[str, Any] = {"in-process": lambda srcs: run_in_process(task, insts, srcs),
                               "subprocess": lambda srcs: run_subprocess(task, insts, srcs),
                               "subprocess-1t": lambda srcs: run_subprocess(task, insts, srcs,
                                                                            ONE_THREAD)}
    boxes: dict[str, Any] = {}
    for rt in runtimes:
        label = "docker" if rt == "runc" else rt
        boxes[f"{label}-cold"] = DockerSandbox(image, runtime=rt)
        boxes[f"{label}-pool"] = DockerSandbox(image, pool_size=args.pool, runtime=rt)
    for name, sb in boxes.items():
        runners[name] = lambda srcs, sb=sb: run_sandbox(task, sb, srcs)
    names = list(runners)
    spent = {m: 0.0 for m in names}
    scores: dict[str, list[float]] = {m: [] for m in names}
    loads: list[float] = []
    try:
        for sb in boxes.values():
            settle(sb, args.pool)
            run_sandbox(task, sb, sources[:1])  # warm: the first execution pays for imports
        for k in range(args.blocks):
            part = sources[k * args.n // args.blocks:(k + 1) * args.n // args.blocks]
            order = names[k % len(names):] + names[:k % len(names)]
            for name in order:
                sb = boxes.get(name)
                if sb is not None:
                    settle(sb, args.pool)
                t0 = time.perf_counter()
                scores[name] += runners[name](part)
                if sb is not None:
                    settle(sb, args.pool)
                spent[name] += time.perf_counter() - t0
            loads.append(round(os.getloadavg()[0], 2))
            print(f"[bench] block {k + 1}/{args.blocks} done (load {loads[-1]})",
                  file=sys.stderr, flush=True)
        lat = latency(runners, boxes, args.pool, args.latency, sources) if args.latency else {}
    finally:
        for sb in boxes.values():
            sb.close()
    modes: dict[str, dict] = {}
    for name in names:
        wall = spent[name]
        modes[name] = {"wall_s": round(wall, 3), "per_candidate_ms": round(1000 * wall / args.n, 2),
                       "throughput_per_s": round(args.n / wall, 3),
                       "mean_score": round(float(np.mean(scores[name])), 4)}
    profiles = [profile(task, image, rt, args.pool, args.profile, sources)
                for rt in runtimes] if args.profile else []

    base = modes["in-process"]["per_candidate_ms"]
    bare = modes["subprocess"]["throughput_per_s"]
    for m in modes.values():
        m["overhead_ms_vs_in_process"] = round(m["per_candidate_ms"] - base, 2)
        m["throughput_vs_subprocess"] = round(m["throughput_per_s"] / bare, 3)
        m["throughput_vs_subprocess_1t"] = round(
            m["throughput_per_s"] / modes["subprocess-1t"]["throughput_per_s"], 3)
    result = {
        "n_candidates": args.n, "instances_per_candidate": args.instances,
        "pool_size": args.pool, "image": image, "runtimes": runtimes, "modes": modes,
        "pool_vs_subprocess": modes.get("docker-pool", {}).get("throughput_vs_subprocess"),
        "pool_vs_subprocess_1t": modes.get("docker-pool", {}).get("throughput_vs_subprocess_1t"),
        "runsc_pool_vs_subprocess": modes.get("runsc-pool", {}).get("throughput_vs_subprocess"),
        "goal_pool_ge_1_0x_subprocess": (modes.get("docker-pool", {})
                                         .get("throughput_vs_subprocess", 0) >= 1.0),
        "profiles": profiles, "latency_ms_one_at_a_time": lat,
        "blocks": args.blocks, "load_avg_1m_per_block": loads,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_before": round(load0[0], 2),
                    "load_avg_1m_after": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'mode':<14} {'ms/cand':>9} {'cand/s':>8} {'vs subproc':>10} {'vs 1t':>6} "
          f"{'overhead ms':>12}")
    for name, m in modes.items():
        print(f"{name:<14} {m['per_candidate_ms']:>9.1f} {m['throughput_per_s']:>8.2f} "
              f"{m['throughput_vs_subprocess']:>10.2f} {m['throughput_vs_subprocess_1t']:>6.2f} "
              f"{m['overhead_ms_vs_in_process']:>12.1f}")
    for p in profiles:
        print_profile(p)
    if lat:
        print(f"one candidate at a time, machine otherwise idle (median of {args.latency}): " +
              ", ".join(f"{k} {v} ms" for k, v in lat.items()))
    print(f"pool / subprocess = {result['pool_vs_subprocess']} (goal >= 1.0: "
          f"{'met' if result['goal_pool_ge_1_0x_subprocess'] else 'NOT met'}); pool / "
          f"one-thread subprocess = {result['pool_vs_subprocess_1t']}; runsc pool / "
          f"subprocess = {result['runsc_pool_vs_subprocess']}; load average "
          f"{load0[0]:.1f} before, {os.getloadavg()[0]:.1f} after; written to {args.out}")


if __name__ == "__main__":
    main()
