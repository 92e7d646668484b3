"""Seed score of every downstream task on val and test, with the time scoring takes.

    .venv/bin/python benchmarks/bench_tasks.py [--repeats 3] [--sandbox docker] [--task NAME ...]

Each (task, split) is scored `repeats` times in fresh containers (seed solutions that draw
random numbers score differently each time); the mean, min and max score and the mean
scoring wall time are written to benchmarks/results/tasks.json with the machine they were
measured on, and printed as a Markdown table. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from stop.sandbox import open_sandbox
from stop.tasks.loader import instances, list_tasks, load_task
from stop.tasks.scoring import machine_info, score_solution

RESULTS = Path(__file__).resolve().parent / "results" / "tasks.json"


def bench_task(task, sandbox, repeats: int) -> dict:
    row: dict = {"task": task.name, "per_call_s": task.per_call_s}
    for split in ("val", "test"):
        t0 = time.perf_counter()
        instances(task, split)
        gen_s = time.perf_counter() - t0
        scores, walls, counts = [], [], []
        for _ in range(repeats):
            report = score_solution(task, task.seed_source, split=split, sandbox=sandbox)
            scores.append(report.score)
            walls.append(report.wall_s)
            counts.append(report.counts())
            print(f"  {task.name}/{split}: {report.score:.4f} in {report.wall_s:.2f} s {report.counts()}",
                  file=sys.stderr, flush=True)
        row[split] = {
            "n": task.n_instances(split), "score_mean": statistics.fmean(scores),
            "score_min": min(scores), "score_max": max(scores), "scores": scores,
            "wall_s_mean": statistics.fmean(walls), "generate_s": gen_s, "counts": counts,
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sandbox", default="docker", choices=["docker", "process"])
    ap.add_argument("--task", action="append", help="only these tasks (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    tasks = [load_task(n) for n in args.task] if args.task else [
        t for t in list_tasks() if t.kind == "solve"]
    sandbox = open_sandbox(args.sandbox)
    rows = []
    try:
        for task in tasks:
            print(f"{task.name}...", file=sys.stderr, flush=True)
            rows.append(bench_task(task, sandbox, args.repeats))
    finally:
        sandbox.close()
    result = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine_info(), "sandbox": args.sandbox, "repeats": args.repeats,
              "tasks": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| task | limit per call | val seed score | test seed score | scoring time val / test |")
    print("|---|---|---|---|---|")
    for r in rows:
        v, t = r["val"], r["test"]
        span = "" if args.repeats == 1 else " ({:.3f}-{:.3f})"
        print(f"| {r['task']} | {r['per_call_s']:g} s "
              f"| {v['score_mean']:.3f}{span.format(v['score_min'], v['score_max'])} "
              f"| {t['score_mean']:.3f}{span.format(t['score_min'], t['score_max'])} "
              f"| {v['wall_s_mean']:.2f} s / {t['wall_s_mean']:.2f} s |")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
