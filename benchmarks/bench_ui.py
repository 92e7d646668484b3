"""Server time of the web view's two heavy pages, on generated run folders.

    .venv/bin/python benchmarks/bench_ui.py [--runs 1000] [--events 5000] [--repeats 5]

Generates, in a temp dir, `--runs` run folders (three rounds each, with model calls, sandbox
executions, evaluations, findings, and the summary.json a finished run has) and one run whose
log holds `--events` events (rounds of the same shape). Then measures, in process (the page
functions the routes call: index refresh or log read, stop's summaries, template rendering):

- the runs page over all runs: the first view (the run index built from nothing), then warm
  views (the index only stats each run's files), and a view after one run's log grew;
- the run page and one round page of the big run: first view (its log parsed) and warm views
  (the log already parsed, only appended lines would be read);
- both through the whole ASGI stack (the token gate included) with Starlette's test client.

Writes benchmarks/results/ui.json and prints a Markdown table. Nothing is timed in the tests:
timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stop.runs.store import Run
from stop.runs.summary import write_summary
from stop.tasks.scoring import machine_info
from stop.ui import pages_runs
from stop.ui.app import create_app
from stop.ui.site import Site

RESULTS = Path(__file__).resolve().parent / "results" / "ui.json"
TASKS = ("parity_noise", "str_grid_dist", "maxcut", "three_sat")
MODELS = ("embedded", "openai/gpt-4o-mini", "smollm2")


def _round(rng: random.Random, t: int, calls: int, execs: int) -> list[dict[str, Any]]:
    h = lambda: f"{rng.getrandbits(64):016x}"  # noqa: E731
    inc, cand = h(), h()
    out: list[dict[str, Any]] = [{"type": "round_start", "round": t, "incumbent_hash": inc}]
    for i in range(calls):
        out.append({"type": "model_call", "round": t, "scope": f"s0/r{t}/self/u{i}/lm",
                    "call_index": 0, "key": f"{rng.getrandbits(256):064x}", "model": "m", "n": 2,
                    "prompt_tokens": 700, "completion_tokens": 300, "cost_usd": 0.0012,
                    "latency_s": 1.5, "cached": False,
                    "texts": ["```python\ndef improve_algorithm(s, u, lm):\n    return s\n```"]})
    for _ in range(execs):
        out.append({"type": "sandbox_exec", "round": t, "role": "solution", "kind": "solve",
                    "status": "ok", "exit_code": 0, "wall_s": 0.2, "candidate_hash": h(),
                    "findings": 0})
        out.append({"type": "utility_call", "round": t, "scope": f"s0/r{t}/self",
                    "utility": "meta", "solution_hash": h(), "occurrence": 0,
                    "value": rng.random(), "test": rng.random()})
    out.append({"type": "audit_finding", "round": t, "finding": {
        "rule": "process-spawn", "severity": "high", "layer": "static", "role": "improver",
        "attempted": "import subprocess", "action": "logged", "candidate_hash": cand, "line": 1,
        "source_line": "import subprocess", "round": t, "detail": {}}})
    scores = {who: {s: [rng.random() for _ in range(5)] for s in ("val", "test")}
              for who in ("incumbent", "candidate")}
    for who, h_ in (("incumbent", inc), ("candidate", cand)):
        for split in ("val", "test"):
            v = scores[who][split]
            out.append({"type": "evaluation", "round": t, "who": who, "split": split,
                        "scores": v, "mean": sum(v) / 5, "candidate_hash": h_,
                        "fallbacks": [""] * 5})
    block = {who: {"val": sum(scores[who]["val"]) / 5, "test": sum(scores[who]["test"]) / 5,
                   "val_scores": scores[who]["val"], "test_scores": scores[who]["test"]}
             for who in scores}
    adopted = block["candidate"]["val"] > block["incumbent"]["val"]
    out.append({"type": "round_end", "round": t, "adopted": adopted, "reason": "generated",
                "incumbent_hash": inc, "candidate_hash": cand,
                "kept_hash": cand if adopted else inc, **block, "model_calls": calls,
                "cached_calls": 0, "tokens": 1000 * calls, "cost_usd": 0.0012 * calls,
                "wall_s": 60.0, "findings": 1})
    return out


def make_run(root: Path, name: str, rng: random.Random, rounds: int, calls: int,
             execs: int) -> Run:
    d = root / name
    (d / "improvers").mkdir(parents=True)
    config = {"task": rng.choice(TASKS), "model": rng.choice(MODELS), "profile": "tiny",
              "rounds": rounds, "n_tests": 5, "margin": 0.0, "alpha": 0.05}
    (d / "config.json").write_text(json.dumps(config))
    events = [{"type": "run_start", "config": config, "pid": None}]
    for t in range(1, rounds + 1):
        events += _round(rng, t, calls, execs)
    events.append({"type": "run_end", "status": "finished"})
    start = 1.7e9 + rng.random() * 1e7
    with open(d / "events.jsonl", "w") as f:
        for i, e in enumerate(events):
            f.write(json.dumps({"seq": i, "ts": round(start + i, 3), **e},
                               separators=(",", ":")) + "\n")
    for t in range(rounds + 1):
        (d / "improvers" / f"round_{t:03d}.py").write_text(
            f"def improve_algorithm(s, u, lm):\n    # round {t}\n    return s\n")
    run = Run(d)
    write_summary(run)
    return run


def timed(fn, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    results: dict[str, Any] = {"machine": machine_info(), "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        root, cache = Path(tmp) / "runs", Path(tmp) / "cache"
        root.mkdir()
        t0 = time.perf_counter()
        runs = [make_run(root, f"20260101-{i:06d}-bench", rng, 3, 4, 6) for i in range(args.runs)]
        per_round = len(_round(rng, 1, 40, 29))
        big_rounds = max(1, -(-args.events // per_round))  # at least --events events
        big = make_run(root, "20260102-000000-big", rng, big_rounds, 40, 29)
        big_events = sum(1 for _ in open(big.dir / "events.jsonl"))
        print(f"generated {len(runs) + 1} runs in {time.perf_counter() - t0:.1f}s; the big run "
              f"has {big_events} events", file=sys.stderr)
        results["big_run_events"] = big_events

        site = Site(root, cache)
        results["runs_page_first_s"] = once(lambda: pages_runs.runs_page(site, {}, {}))
        results["runs_page_warm"] = timed(lambda: pages_runs.runs_page(site, {}, {}), args.repeats)
        results["runs_page_filtered"] = timed(lambda: pages_runs.runs_page(
            site, {}, {"task": "maxcut", "sort": "cost", "order": "asc"}), args.repeats)
        with open(runs[0].dir / "events.jsonl", "a") as f:
            f.write(json.dumps({"seq": 999999, "ts": 1.8e9, "type": "run_resume"}) + "\n")
        results["runs_page_one_changed_s"] = once(lambda: pages_runs.runs_page(site, {}, {}))

        path = {"run": big.id}
        cold = Site(root, Path(tmp) / "cache-cold")  # a fresh process: nothing parsed yet
        results["run_page_first_s"] = once(lambda: pages_runs.run_page(cold, path, {}))
        results["run_page_warm"] = timed(lambda: pages_runs.run_page(cold, path, {}), args.repeats)
        rpath = {"run": big.id, "round": str(big_rounds)}
        results["round_page_warm"] = timed(lambda: pages_runs.round_page(cold, rpath, {}),
                                           args.repeats)

        from starlette.testclient import TestClient

        app = create_app(site, token="t", port=1, hosts={"testserver"})
        with TestClient(app) as client:
            client.cookies.set("stop_ui_1", "t")
            for name, url in (("http_runs_page", "/"), ("http_run_page", f"/runs/{big.id}")):
                def get(url: str = url) -> None:
                    r = client.get(url)
                    assert r.status_code == 200, (url, r.status_code)
                results[name] = timed(get, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"| measure ({args.runs} runs; run page: {results['big_run_events']} events) | seconds |")
    print("|---|---|")
    for k, v in results.items():
        if k in ("machine", "runs", "big_run_events"):
            continue
        print(f"| {k} | {v['median_s'] if isinstance(v, dict) else v} |")


if __name__ == "__main__":
    main()
