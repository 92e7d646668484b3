"""Orchestration overhead of one self-improvement round, against its sandbox executions.

One scripted round (the model answers instantly from a script: a better, a worse and a failing
improver; a two-bit-mask and a constant LPN solution) on the real Docker sandbox, with
`--jobs 1` so that executions do not overlap and their times add up:

  sandbox time   every solution execution (static scan + fresh container + harness), plus
                 every improver execution minus the time it waited on host services
                 (model and utility calls are answered by the host while the container waits)
  model time     the model's latency (near zero: scripted)
  orchestration  the rest of the round's wall time: instance generation, host-side grading,
                 budgets, the event log (one fsync per event), thread pools, bookkeeping

Usage: python benchmarks/bench_loop.py [--repeat 2]
Writes benchmarks/results/loop.json and prints the split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIX = ROOT / "tests" / "fixtures" / "loop"


def fenced(name: str) -> str:
    return f"New program:\n```python\n{(FIX / name).read_text()}```\n"


def one_round(jobs: int) -> dict:
    from stop.core.config import RunConfig
    from stop.core.loop import execute, new_run
    from stop.models import ScriptedModel
    from stop.runs.store import RunStore
    from stop.sandbox import open_sandbox

    script = [{"match": "def improve_algorithm",
               "texts": [fenced(f"improver_{n}.py") for n in ("better", "worse", "crash")]},
              {"match": None, "texts": [fenced("lpn_two_bits.py"), fenced("lpn_zeros.py")]}]
    cfg = RunConfig.from_profile(
        "tiny", model="scripted", rounds=1, n_tests=1, lm_budget=1, max_responses_per_call=2,
        utility_budget=3, meta_lm_budget=1, meta_max_responses_per_call=3, meta_utility_budget=4,
        improver_wall_s=60, self_improve_wall_s=600, jobs=jobs)
    with tempfile.TemporaryDirectory() as tmp:
        run = new_run(cfg, RunStore(Path(tmp)))
        sandbox = open_sandbox("docker")
        try:
            started = time.monotonic()
            execute(run, cfg, model=ScriptedModel(script), sandbox=sandbox)
            wall = time.monotonic() - started
        finally:
            sandbox.close()
        events = run.events()
    solutions = [e["wall_s"] for e in events if e["type"] == "task_score"]
    improvers = [(e["wall_s"], e.get("service_s", 0.0)) for e in events
                 if e["type"] == "improver_run"]
    model = sum(e.get("latency_s", 0.0) for e in events if e["type"] == "model_call")
    sandbox_s = sum(solutions) + sum(w - s for w, s in improvers)
    execs = [e for e in events if e["type"] == "sandbox_exec"]
    return {
        "jobs": jobs,
        "round_wall_s": round(wall, 3),
        "solution_executions": len(solutions),
        "improver_executions": len(improvers),
        "sandbox_s": round(sandbox_s, 3),
        "container_wall_s": round(sum(e["wall_s"] for e in execs), 3),
        "model_s": round(model, 3),
        "orchestration_s": round(wall - sandbox_s - model, 3),
        "orchestration_share": round((wall - sandbox_s - model) / wall, 4),
        "events": len(events),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows = [one_round(jobs=1) for _ in range(args.repeat)]
    rows.append(one_round(jobs=2))
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "python": platform.python_version()},
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": rows}
    dest = ROOT / "benchmarks" / "results" / "loop.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"jobs {r['jobs']}: round {r['round_wall_s']:.2f} s = sandbox {r['sandbox_s']:.2f} s "
              f"({r['solution_executions']} solution + {r['improver_executions']} improver "
              f"executions) + model {r['model_s']:.3f} s + orchestration "
              f"{r['orchestration_s']:.2f} s ({100 * r['orchestration_share']:.1f}%), "
              f"{r['events']} events")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
