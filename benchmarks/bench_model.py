"""Benchmark the embedded model: prompt and generation speed, and one STOP-sized request.

The STOP-sized request is the seed improver's own prompt (the improver's source and the
meta-utility description, as in self-improvement) asked for 6 samples, done three ways:

- naive: 6 separate requests, each evaluating the whole prompt (a server without prefix reuse);
- sequential: 6 separate requests to stop's server, which keeps the prompt in its KV cache;
- batched: one request with n=6: the prompt evaluated once, the 6 samples decoded together.

Every sample generates exactly --max-tokens tokens (end-of-sequence ignored) so the three ways
do the same work. Usage: python benchmarks/bench_model.py [--smoke] [--max-tokens 256]
Writes benchmarks/results/model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import string
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stop.models import local as local_model  # noqa: E402

FENCE = "`" * 3


def stop_prompt() -> tuple[str, str]:
    """(expertise, message) exactly as the seed improver builds them when improving itself."""
    task = ROOT / "tasks" / "meta_optimization"
    improver = (task / "seed_algorithm.py").read_text()
    ns: dict = {}
    exec((task / "utility.py").read_text(), ns)
    description = string.Template(ns["DESCRIPTION"]).safe_substitute(
        base_task="parity_noise", base_summary="learning parity with noise", n_tests=5,
        base_lm_calls=4, base_responses=6, base_utility_calls=25, budget=25)
    expertise = ("You are a senior software engineer and algorithm researcher. You write correct, "
                 "efficient Python and you think carefully about what a scoring function rewards.")
    message = (f"Here is a Python program:\n{FENCE}python\n{improver}\n{FENCE}\n\n"
               f"It is scored by this utility (higher is better):\n{FENCE}python\n{description}\n"
               f"{FENCE}\n\nWrite an improved version of the program that scores higher. Keep the "
               "same function name and\nsignature. Briefly explain your idea first, then give the "
               "complete new program in a single\nfenced Python code block.")
    return expertise, message


def post(url: str, body: dict, which: str) -> tuple[dict, dict, float]:
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=3600) as r:
        out = json.loads(r.read())
    wall = time.monotonic() - t0
    return out, json.loads(local_model.stats_path(which).read_text()), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="benchmark SmolLM2 instead of Qwen")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "model.json"))
    args = ap.parse_args()
    which = "smollm2" if args.smoke else "embedded"
    expertise, message = stop_prompt()
    server = local_model.LocalServer(which, advertise=False)  # no other process may share it
    t0 = time.monotonic()
    url = server.start()
    load_s = time.monotonic() - t0
    n, mt = args.samples, args.max_tokens

    def body(nonce: str | None, k: int, max_tokens: int = mt) -> dict:
        # A nonce at the very start of the prompt defeats any prefix reuse.
        system = f"[{nonce}] {expertise}" if nonce else expertise
        return {"model": "local", "messages": [{"role": "system", "content": system},
                                                {"role": "user", "content": message}],
                "n": k, "max_tokens": max_tokens, "temperature": 0.7, "ignore_eos": True}

    threads = int(os.environ.get("STOP_LOCAL_THREADS", "0") or 0) or max(1, min(8, (os.cpu_count() or 2) - 1))
    results: dict = {"model": server.spec.alias, "max_tokens": mt, "samples": n, "threads": threads,
                     "server_load_s": round(load_s, 2)}
    try:
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        post(url, body(uuid.uuid4().hex, 1, 4), which)  # warm-up
        _, st, _ = post(url, body(uuid.uuid4().hex, 1, mt), which)
        results["prompt_tokens"] = st["prompt_tokens"]
        results["prompt_tok_s"] = round(st["prompt_evaluated"] / st["prompt_s"], 2)
        results["generate_tok_s"] = round(st["completion_tokens"] / st["generate_s"], 2)
        log(f"prompt {st['prompt_tokens']} tokens: {results['prompt_tok_s']} tok/s prompt, "
            f"{results['generate_tok_s']} tok/s generation")

        def run(label: str, bodies: list[dict]) -> None:
            t = time.monotonic()
            tokens = 0
            for b in bodies:
                out, _, _ = post(url, b, which)
                tokens += out["usage"]["completion_tokens"]
            wall = time.monotonic() - t
            results[label] = {"wall_s": round(wall, 2), "requests": len(bodies),
                              "completion_tokens": tokens}
            log(f"{label}: {wall:.1f} s for {tokens} tokens in {len(bodies)} request(s)")

        run("naive", [body(uuid.uuid4().hex, 1) for _ in range(n)])
        shared = uuid.uuid4().hex
        post(url, body(shared, 1, 1), which)  # the sequential way starts from a warm prompt, like batched
        run("sequential_prefix_reuse", [body(shared, 1) for _ in range(n)])
        shared = uuid.uuid4().hex
        run("batched", [body(shared, n)])
        results["batched_over_naive"] = round(results["batched"]["wall_s"] / results["naive"]["wall_s"], 3)
        results["batched_over_sequential"] = round(
            results["batched"]["wall_s"] / results["sequential_prefix_reuse"]["wall_s"], 3)
    finally:
        server.stop()
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "processor": platform.processor() or platform.machine(),
                          "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
    results["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
