"""The cluster executor on a local multi-node Ray cluster (every node on this machine, sharing
its Docker engine and its cores). Three measurements, one run:

  scaling    candidates that sleep (no CPU, so even 2 cores can show it), one `docker` slot per
             worker node, with 1, 2 and 4 worker nodes: throughput against linear (goal 0.8x)
  overhead   one trivial job at a time: a Ray-dispatched container against the local pool
  round      a paper-sized round's sandbox work, scaled down: real LPN solution scorings
             (score_solution on parity_noise's validation split), spread over the nodes against
             the local pool with as many jobs at once. Every node here shares the same two
             cores, so this shows the executor's cost, not a real cluster's gain.

Usage: python benchmarks/bench_cluster.py [--sleep 2] [--per-node 6] [--trivial 15]
           [--scorings 40] [--nodes 1,2,4] [--parts scaling,overhead,round] [--out FILE]
Writes benchmarks/results/cluster.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stop.cluster.connect import connect  # noqa: E402
from stop.cluster.executor import RaySandbox  # noqa: E402
from stop.cluster.local import LocalCluster  # noqa: E402
from stop.sandbox import SolveJob  # noqa: E402
from stop.sandbox.docker import DockerSandbox  # noqa: E402
from stop.sandbox.records import ExecLimits  # noqa: E402
from stop.tasks.loader import load_task  # noqa: E402
from stop.tasks.scoring import score_solution  # noqa: E402

TRIVIAL = "def algorithm(a, b):\n    return a + b\n"
SLEEPER = "import time\n\ndef algorithm(k):\n    time.sleep({s})\n    return k\n"
LPN = (ROOT / "tests" / "fixtures" / "loop" / "lpn_two_bits.py").read_text()


def _batch(sandbox, jobs: list[SolveJob], at_once: int, wall: float) -> float:
    """Seconds to run every job, `at_once` in flight; every result must be ok."""
    def one(job: SolveJob) -> None:
        r = sandbox.execute(job, limits=ExecLimits(wall_s=wall), role="solution")
        assert r.status == "ok", r.stderr

    t0 = time.monotonic()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(one, jobs))
    return time.monotonic() - t0


def scaling(nodes: list[int], per_node: int, sleep: float) -> list[dict]:
    rows = []
    for k in nodes:
        with LocalCluster(workers=k) as cluster:
            sb = RaySandbox(connect(cluster.address))
            try:
                warm = [SolveJob(source=SLEEPER.format(s=0), calls=[[i]]) for i in range(k)]
                _batch(sb, warm, k, 60)  # each node's worker and image check, once
                jobs = [SolveJob(source=SLEEPER.format(s=sleep) + f"# {i}\n", calls=[[i]])
                        for i in range(k * per_node)]
                wall = _batch(sb, jobs, k, sleep + 60)
            finally:
                sb.close()
        rows.append({"nodes": k, "candidates": len(jobs), "wall_s": round(wall, 2),
                     "per_s": round(len(jobs) / wall, 3)})
        print(f"scaling: {k} node(s): {len(jobs)} sleepers in {wall:.1f} s "
              f"({len(jobs) / wall:.2f}/s)", flush=True)
    base = rows[0]["per_s"] / rows[0]["nodes"]
    for r in rows:
        r["vs_linear"] = round(r["per_s"] / (base * r["nodes"]), 3)
    return rows


def _latencies(sandbox, n: int) -> list[float]:
    out = []
    for i in range(n):
        job = SolveJob(source=TRIVIAL + f"# {i}\n", calls=[[1, 2]])
        t0 = time.monotonic()
        r = sandbox.execute(job, limits=ExecLimits(wall_s=30), role="solution")
        out.append(time.monotonic() - t0)
        assert r.status == "ok", r.stderr
        time.sleep(0.3)  # let the pool refill: a trivial job at a time
    return out


def round_work(sandbox, n: int, at_once: int) -> float:
    task = load_task("parity_noise")
    sources = [LPN + f"\n# variant {i}\n" for i in range(n)]

    def one(src: str) -> float:
        return score_solution(task, src, split="val", sandbox=sandbox).score

    t0 = time.monotonic()
    with ThreadPoolExecutor(at_once) as pool:
        scores = list(pool.map(one, sources))
    assert len(set(scores)) == 1  # the same solution scores the same everywhere
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sleep", type=float, default=2.0)
    ap.add_argument("--per-node", type=int, default=6)
    ap.add_argument("--trivial", type=int, default=15)
    ap.add_argument("--scorings", type=int, default=40)
    ap.add_argument("--nodes", default="1,2,4")
    ap.add_argument("--parts", default="scaling,overhead,round",
                    help="which measurements (overhead and round share one cluster)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cluster.json"))
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_before": os.getloadavg()[0]}}
    out["args"] = vars(a)
    if "scaling" in parts:
        out["scaling"] = scaling([int(x) for x in a.nodes.split(",")], a.per_node, a.sleep)
    if parts & {"overhead", "round"}:
        shared(a, out)
    out["machine"]["load_after"] = os.getloadavg()[0]
    path = Path(a.out)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def shared(a: argparse.Namespace, out: dict) -> None:
    local = DockerSandbox(pool_size=2)
    with LocalCluster(workers=2) as cluster:
        sb = RaySandbox(connect(cluster.address))
        try:
            _latencies(sb, 2)
            _latencies(local, 2)  # warm both
            ray_ms = [1000 * x for x in _latencies(sb, a.trivial)]
            pool_ms = [1000 * x for x in _latencies(local, a.trivial)]
            out["overhead"] = {"ray_median_ms": round(statistics.median(ray_ms), 1),
                               "pool_median_ms": round(statistics.median(pool_ms), 1),
                               "ratio": round(statistics.median(ray_ms)
                                              / statistics.median(pool_ms), 2),
                               "n": a.trivial}
            print(f"overhead: Ray-dispatched {out['overhead']['ray_median_ms']} ms, local pool "
                  f"{out['overhead']['pool_median_ms']} ms (x{out['overhead']['ratio']})",
                  flush=True)
            ray_s = round_work(sb, a.scorings, 2)
            local_s = round_work(local, a.scorings, 2)
        finally:
            sb.close()
            local.close()
    out["round"] = {"scorings": a.scorings, "at_once": 2, "nodes": 2, "ray_s": round(ray_s, 1),
                    "local_pool_s": round(local_s, 1), "ratio": round(local_s / ray_s, 2),
                    "note": "every node shares this machine's 2 cores"}
    print(f"round: {a.scorings} LPN scorings, 2 at once: Ray over 2 nodes {ray_s:.1f} s, local "
          f"pool {local_s:.1f} s (Ray runs at x{local_s / ray_s:.2f} the local speed)", flush=True)


if __name__ == "__main__":
    main()
