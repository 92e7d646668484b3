"""Benchmark the embedded model's engine on STOP's own prompt, at 1 and 2 threads, in one run.

The prompt is the seed improver's when it improves itself (its source and the meta-utility
description). For each thread count, one server (`stop.models.local_server --threads T`):

- single: one sample (n=1), lookup off;         single_lookup: the same with lookup drafts;
- n6: one request with n=6, lookup off;          n6_lookup: the same with lookup drafts;
- two_n6: two n=6 requests with different prompts, the second sent while the first decodes
  (it joins the running batch), lookup on; tokens/s counts both together.

Every sample generates exactly --max-tokens tokens (end-of-sequence ignored, temperature 0.7,
fixed seeds), every prompt is evaluated once before it is timed (the prefix cache holds both),
so tokens/s is generation only. Ratios are within one thread count, a few minutes apart;
absolute figures move with the machine's load, recorded with each section. Also recorded:
lookup acceptance (accepted / drafted), whether greedy replies are identical with lookup on and
off, prompt tokens/s and the server's resident memory.

Usage: python benchmarks/bench_model.py [--smoke] [--max-tokens 128] [--threads 1,2]
[--weights FILE]. Writes benchmarks/results/model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stop.models import local_install  # noqa: E402

FENCE = "`" * 3


def stop_prompt(base_task: str = "parity_noise", summary: str = "learning parity with noise") -> list[dict]:
    """The messages the seed improver sends when improving itself."""
    task = ROOT / "tasks" / "meta_optimization"
    improver = (task / "seed_algorithm.py").read_text()
    ns: dict = {}
    exec((task / "utility.py").read_text(), ns)
    description = string.Template(ns["DESCRIPTION"]).safe_substitute(
        base_task=base_task, base_summary=summary, n_tests=5,
        base_lm_calls=4, base_responses=6, base_utility_calls=25, budget=25)
    expertise = ("You are a senior software engineer and algorithm researcher. You write correct, "
                 "efficient Python and you think carefully about what a scoring function rewards.")
    message = (f"Here is a Python program:\n{FENCE}python\n{improver}\n{FENCE}\n\n"
               f"It is scored by this utility (higher is better):\n{FENCE}python\n{description}\n"
               f"{FENCE}\n\nWrite an improved version of the program that scores higher. Keep the "
               "same function name and\nsignature. Briefly explain your idea first, then give the "
               "complete new program in a single\nfenced Python code block.")
    return [{"role": "system", "content": expertise}, {"role": "user", "content": message}]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=7200) as r:
        return json.loads(r.read())


def rss_mb(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) // 1024
    return out


class Server:
    """`python -m stop.models.local_server` on a free port of 127.0.0.1, for this benchmark only."""

    def __init__(self, weights: str, threads: int | None, stats: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "stop.models.local_server", "--model", weights,
               "--port", str(self.port), "--stats", str(stats), "--exit-with-parent"]
        if threads:  # else the server picks threads per step from the machine's load
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise SystemExit("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class ContainerLoad:
    """N containers of the sandbox image, each spinning one core, as candidate programs do."""

    def __init__(self, n: int) -> None:
        self.ids: list[str] = []
        if n <= 0:
            return
        images = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
                                 "stop-sandbox"], capture_output=True, text=True).stdout.split()
        if not images:
            raise SystemExit("no stop-sandbox image for --container-load: run scripts/setup.sh")
        for _ in range(n):
            out = subprocess.run(["docker", "run", "-d", "--rm", "--network", "none", "--cpus", "1",
                                  images[0], "python3", "-c", "while True: pass"],
                                 capture_output=True, text=True, check=True)
            self.ids.append(out.stdout.strip())
        time.sleep(2.0)

    def stop(self) -> None:
        if self.ids:
            subprocess.run(["docker", "rm", "-f", *self.ids], capture_output=True)


def bench_threads(weights: str, threads: int | None, mt: int, n: int, stats_file: Path,
                  quick: bool = False) -> dict:
    t0 = time.monotonic()
    server = Server(weights, threads, stats_file)
    url = server.url
    res: dict = {"threads": threads, "server_start_s": round(time.monotonic() - t0, 2),
                 "load_avg_start": list(os.getloadavg())}
    prompts = [stop_prompt(), stop_prompt("max_cut", "maximum cut of a graph")]

    def body(p: int, k: int, lookup: bool, max_tokens: int = mt, temperature: float = 0.7) -> dict:
        return {"model": "local", "messages": prompts[p], "n": k, "max_tokens": max_tokens,
                "temperature": temperature, "ignore_eos": temperature > 0, "seed": 1234 + p,
                "lookup": lookup}

    def stats() -> dict:
        return json.loads(stats_file.read_text())

    def timed(label: str, bodies: list[dict], gap_s: float = 0.0) -> None:
        outs: list[dict] = []
        before = stats()["ts"] if stats_file.exists() else 0

        def go(b: dict) -> None:
            outs.append(post(url, b))
        t = time.monotonic()
        workers = []
        for i, b in enumerate(bodies):
            if i:
                time.sleep(gap_s)
            workers.append(threading.Thread(target=go, args=(b,)))
            workers[-1].start()
        for w in workers:
            w.join()
        wall = time.monotonic() - t
        tokens = sum(o["usage"]["completion_tokens"] for o in outs)
        st = stats()
        row = {"wall_s": round(wall, 2), "completion_tokens": tokens,
               "tok_s": round(tokens / wall, 2)}
        if len(bodies) == 1 and st["ts"] != before:
            row.update(drafted=st.get("drafted", 0), accepted=st.get("accepted", 0),
                       steps=st["steps"])
            if row["drafted"]:
                row["acceptance"] = round(row["accepted"] / row["drafted"], 3)
        res[label] = row
        print(f"  threads={threads} {label}: {row}", file=sys.stderr, flush=True)

    try:
        first = post(url, body(0, 1, False, 1))  # evaluates prompt 0
        st = stats()
        res["prompt_tokens"] = first["usage"]["prompt_tokens"]
        res["prompt_tok_s"] = round(st["prompt_evaluated"] / st["prompt_s"], 2) if st["prompt_s"] else None
        post(url, body(1, 1, False, 1))  # and prompt 1: both stay cached
        timed("single", [body(0, 1, False)])
        timed("n6", [body(0, n, False)])
        if not quick:
            timed("single_lookup", [body(0, 1, True)])
            timed("n6_lookup", [body(0, n, True)])
            timed("two_n6", [body(0, n, True), body(1, n, True)], gap_s=2.0)
            g_off = post(url, body(0, 1, False, mt, 0.0))["choices"][0]["message"]["content"]
            g_on = post(url, body(0, 1, True, mt, 0.0))["choices"][0]["message"]["content"]
            res["greedy_identical_lookup_on_off"] = g_off == g_on
            res["prefix_cache_hit"] = stats()["prompt_evaluated"] == 0
        res["threads_used"] = stats().get("threads")
        res["decode_share"] = stats().get("decode_share")
        res["memory_mb"] = rss_mb(server.proc.pid)
    finally:
        server.stop()
        res["load_avg_end"] = list(os.getloadavg())
    s, n6 = res["single"]["tok_s"], res["n6"]["tok_s"]
    if quick:
        res["ratios"] = {"n6_over_single": round(n6 / s, 2)}
        return res
    return with_ratios(res)


def with_ratios(res: dict) -> dict:
    s, n6 = res["single"]["tok_s"], res["n6"]["tok_s"]
    res["ratios"] = {
        "n6_over_single": round(n6 / s, 2),
        "n6_lookup_over_n6": round(res["n6_lookup"]["tok_s"] / n6, 2),
        "n6_lookup_over_single": round(res["n6_lookup"]["tok_s"] / s, 2),
        "single_lookup_over_single": round(res["single_lookup"]["tok_s"] / s, 2),
        "two_n6_over_n6_lookup": round(res["two_n6"]["tok_s"] / res["n6_lookup"]["tok_s"], 2),
    }
    return res


def versus(weights: str, other: str, threads: int | None, mt: int, n: int, tmp: Path,
           rounds: int = 2) -> dict:
    """single and n6 on two weight files, alternating, each server idle while the other runs."""
    servers = [Server(w, threads, tmp / f"stats{i}.json") for i, w in enumerate((weights, other))]
    rows: dict = {}
    try:
        msgs = stop_prompt()
        for srv in servers:
            post(srv.url, {"messages": msgs, "n": 1, "max_tokens": 1, "lookup": False})
        for _ in range(rounds):
            for k in (1, n):
                for i, srv in enumerate(servers):
                    t = time.monotonic()
                    out = post(srv.url, {"messages": msgs, "n": k, "max_tokens": mt, "seed": 5,
                                         "temperature": 0.7, "ignore_eos": True, "lookup": False})
                    tok_s = out["usage"]["completion_tokens"] / (time.monotonic() - t)
                    rows.setdefault(f"{'ab'[i]}_n{k}", []).append(round(tok_s, 2))
                    print(f"  threads={threads} {'ab'[i]} n={k}: {tok_s:.2f} tok/s",
                          file=sys.stderr, flush=True)
    finally:
        for srv in servers:
            srv.stop()
    med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
    return {"threads": threads, "tok_s": rows, "median": med,
            "b_over_a_single": round(med["b_n1"] / med["a_n1"], 2),
            f"b_over_a_n{n}": round(med[f"b_n{n}"] / med[f"a_n{n}"], 2),
            f"b_n{n}_over_a_single": round(med[f"b_n{n}"] / med["a_n1"], 2),
            f"a_n{n}_over_a_single": round(med[f"a_n{n}"] / med["a_n1"], 2),
            "load_avg_end": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="benchmark SmolLM2 instead of Qwen")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--threads", default="1,2", help="comma-separated; 0 = chosen by load")
    ap.add_argument("--container-load", type=int, default=0,
                    help="busy sandbox containers during the run; with it only single and n6")
    ap.add_argument("--weights", default=None, help="another GGUF of the same model")
    ap.add_argument("--versus", default=None,
                    help="another GGUF: single and n6 on both, alternating (a = --weights)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "model.json"))
    args = ap.parse_args()
    which = "smollm2" if args.smoke else "embedded"
    weights = args.weights or str(local_install.weights_path(which))
    results: dict = {"model": local_install.SPECS[which].alias, "weights": Path(weights).name,
                     "max_tokens": args.max_tokens, "samples": args.samples, "runs": []}
    results["container_load"] = args.container_load
    if args.versus:
        results["versus"] = Path(args.versus).name
    load = ContainerLoad(args.container_load)
    try:
        with tempfile.TemporaryDirectory(prefix="stop-bench-") as tmp:
            for t in (int(x) for x in args.threads.split(",")):
                if args.versus:
                    results["runs"].append(versus(weights, args.versus, t or None, args.max_tokens,
                                                  args.samples, Path(tmp)))
                    continue
                results["runs"].append(bench_threads(weights, t or None, args.max_tokens,
                                                     args.samples, Path(tmp) / "stats.json",
                                                     quick=args.container_load > 0))
    finally:
        load.stop()
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "processor": platform.processor() or platform.machine()}
    results["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
