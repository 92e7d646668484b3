"""Reliability under kills, hostile frames, concurrent owners, damaged files and bad arguments.

Everything runs for real: the loop through `stop run` with a scripted model, the Docker sandbox,
run folders in a temp dir (never the project's runs/). Parts (`--parts`, comma-separated):

  kill     N runs of a small scripted profile (same seed), each killed with SIGKILL at random
           moments (up to --kills-per-run kills, while the run still has work), then
           `stop run --resume` until it finishes. Each is compared with one unkilled run of
           the same seed (rounds, decisions, scores, improvers, candidates), its log is checked
           for an event recorded twice (every once-only key: improver_run, improver_test,
           evaluation, utility_call, model_call) and for a repeated seq, and `stop replay` of
           it must agree.
  memory   hostile candidates, each in a fresh process (so peaks do not mix) that runs one
           sandbox execution: a 400 MB forged frame on the harness's channel, a 300,000-deep
           nested frame with the right nonce and sequence number, an improver and a solution
           returning 150 MB, and 60 threads racing the utility and model budgets of the loop's
           own improver services. Peak RSS of that process (ru_maxrss from wait4; VmHWM from
           inside agrees), and the budgets counted on the host.
  lock     a run owned by a live `stop run`, then by a `stop run --resume`: a second resume
           must exit non-zero with one line naming the owner's pid; after kill -9 of the owner
           the run resumes to the unkilled run's result with no manual unlocking.
  damage   a runs folder of healthy copies of a real run plus one copy per damage (a JSON line
           that is not an object, invalid UTF-8, an event missing fields, config.json a list,
           config.json gone): `stop runs` lists every run, each damaged one with a reason, and
           every command on a damaged run is one `error:` line, with nothing written.
  args     bad inputs, each must give exactly one `error:` line, a non-zero exit, no traceback.

Usage: python benchmarks/bench_reliability.py [--parts kill,memory,lock,damage,args]
         [--runs 12] [--kills-per-run 2] [--seed 0] [--forged-mb 400] [--depth 300000]
         [--return-mb 150] [--threads 60] [--race-budget 25] [--keep DIR]
Writes benchmarks/results/reliability.json (only when every part ran) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIX = ROOT / "tests" / "fixtures" / "loop"
RESULT = ROOT / "benchmarks" / "results" / "reliability.json"
PARTS = ("kill", "memory", "lock", "damage", "args")
CLI = [sys.executable, "-c", "from stop.cli import main; main()"]
# A small profile: one round, the seed improver searching two proposals (a better and a worse
# improver), each meta-utility one improver run on LPN: about 20 sandbox executions. The
# scripted model hands out an entry's texts in turn, so a reply depends on how many calls came
# before it; a resumed process serves earlier calls from the log and starts its own count
# afresh. Every request here asks for all of its entry's texts at once (2 improvers, 1 LPN
# solution), so a reply depends on the request only, as a sampled model's does on its seed.
SETTINGS = {"n_tests": 1, "lm_budget": 1, "max_responses_per_call": 1, "utility_budget": 2,
            "meta_lm_budget": 1, "meta_max_responses_per_call": 2, "meta_utility_budget": 3,
            "improver_wall_s": 20, "self_improve_wall_s": 120}


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fenced(name: str) -> str:
    return f"Here.\n```python\n{(FIX / name).read_text()}```\n"


def cli_env(runs: Path) -> dict[str, str]:
    return {**os.environ, "STOP_RUNS_DIR": str(runs), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def stop(*args: str, runs: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # Not from the checkout's folder: `python -c` puts the working directory first on sys.path.
    return subprocess.run([*CLI, *args], env=cli_env(runs), capture_output=True, text=True,
                          timeout=timeout, cwd=tempfile.gettempdir())


def spawn(args: list[str], runs: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=cli_env(runs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=tempfile.gettempdir())


def kill9(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


class Profile:
    """The scripted run every part starts from: its command lines and its unkilled result."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.script = tmp / "script.json"
        self.script.write_text(json.dumps({"replies": [
            {"match": "def improve_algorithm",
             "texts": [fenced("improver_better.py"), fenced("improver_worse.py")]},
            {"match": None, "texts": [fenced("lpn_two_bits.py")]}]}))
        self.seed, self.tmp = seed, tmp
        self.ref: dict[str, Any] | None = None

    def start_args(self) -> list[str]:
        sets = [f"--set={k}={v}" for k, v in SETTINGS.items()]
        return ["run", "--quiet", "--rounds", "1", "--jobs", "2", "--seed", str(self.seed),
                "--model", f"scripted:{self.script}", *sets]

    def reference(self) -> dict[str, Any]:
        """The unkilled run (made once): its folder, wall time, events, final state."""
        if self.ref is None:
            runs = self.tmp / "reference"
            t0 = time.monotonic()
            proc = spawn(self.start_args(), runs)
            first = None
            while proc.poll() is None:
                if first is None and list(runs.glob("*/events.jsonl")):
                    first = time.monotonic() - t0
                time.sleep(0.05)
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"the reference run failed: {err[-800:]}")
            run = open_run(runs)
            self.ref = {"dir": run.dir, "wall_s": time.monotonic() - t0,
                        "first_event_s": first or 1.0, "events": len(run.events()),
                        "state": final_state(run)}
            print(f"reference run: {self.ref['wall_s']:.1f} s, {self.ref['events']} events",
                  flush=True)
        return self.ref


def open_run(runs: Path):
    from stop.runs.store import RunStore

    return RunStore(runs).open("latest")


def final_state(run) -> dict:
    """What a resumed run must reproduce: decisions, scores, improvers, candidates."""
    from stop.runs.summary import summarize

    s = summarize(run)
    rows = [{k: r.get(k) for k in ("round", "adopted", "reason", "incumbent_hash",
                                   "candidate_hash", "kept_hash", "incumbent", "candidate")}
            for r in s["round_table"]]
    return {"rounds": rows, "status": s["status"], "best": s["best"],
            "improvers": {p.name: p.read_text() for p in sorted(run.dir.glob("improvers/*.py"))},
            "candidates": sorted(p.name for p in run.dir.glob("candidates/*.py"))}


def duplicates(log: Path) -> dict[str, int]:
    """Once-only events recorded more than once, by type; and repeated seq numbers."""
    from stop.runs.events import identity

    events = [json.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    keys = Counter(k for e in events if (k := identity(e)) is not None)
    out = Counter(k[0] for k, n in keys.items() for _ in range(n - 1))
    seqs = Counter(e.get("seq") for e in events)
    out["seq"] = sum(n - 1 for n in seqs.values())
    return {k: v for k, v in out.items() if v}


# ---- part 1: kill -9 at random moments ---------------------------------------------------------

def one_killed_run(i: int, prof: Profile, kills_per_run: int, rng: random.Random) -> dict:
    ref = prof.reference()
    runs = prof.tmp / f"killed{i:02d}"
    kills: list[dict] = []
    missed, tracebacks, sessions = 0, 0, 0
    args = prof.start_args()
    while True:
        sessions += 1
        logs = list(runs.glob("*/events.jsonl"))
        before = len(logs[0].read_bytes().splitlines()) if logs else 0
        left = max(0.05, 1 - before / ref["events"])
        t0 = time.monotonic()
        proc = spawn(args, runs)
        if len(kills) < kills_per_run:
            span = (ref["wall_s"] - ref["first_event_s"]) * left
            at = ref["first_event_s"] + rng.uniform(0.0, 0.95 * span)
            while proc.poll() is None and time.monotonic() - t0 < at:
                time.sleep(0.02)
            if proc.poll() is None:
                kill9(proc)
                logs = list(runs.glob("*/events.jsonl"))
                lines = logs[0].read_bytes().splitlines(True) if logs else []
                last = json.loads(lines[-1]).get("type") if lines and lines[-1].endswith(
                    b"\n") else "a torn line" if lines else None
                kills.append({"at_s": round(time.monotonic() - t0, 2), "events": len(lines),
                              "last_event": last})
                if logs:
                    args = ["run", "--resume", "latest", "--quiet"]
                continue
            missed += 1
        out, err = proc.communicate(timeout=900)
        tracebacks += "Traceback" in err
        if proc.returncode != 0:
            return {"run": i, "kills": kills, "error": err.strip()[-500:], "identical": False}
        break
    run = open_run(runs)
    state = final_state(run)
    dups = duplicates(run.log.path)
    resumes = sum(1 for e in run.events() if e["type"] == "run_resume")
    replay = stop("replay", "latest", "--quiet", runs=runs, timeout=900)
    replay_ok = replay.returncode == 0 and "every adoption decision reproduced" in replay.stdout
    tracebacks += "Traceback" in replay.stderr
    diff = [k for k in state if state[k] != ref["state"][k]]
    return {"run": i, "kills": kills, "missed": missed, "sessions": sessions,
            "resumes_logged": resumes, "identical": not diff, "differs_in": diff,
            "duplicates": dups, "replay_agrees": replay_ok,
            "replay": (replay.stdout.strip().splitlines() or [replay.stderr.strip()])[0][:200],
            "tracebacks": tracebacks}


def part_kill(prof: Profile, a: argparse.Namespace) -> dict:
    prof.reference()
    rng = random.Random(a.seed)
    runs = []
    for i in range(a.runs):
        r = one_killed_run(i, prof, a.kills_per_run, rng)
        runs.append(r)
        print(f"  run {i:2d}: {len(r['kills'])} kill(s) at "
              f"{', '.join(str(k['at_s']) for k in r['kills'])} s; identical {r['identical']}, "
              f"duplicates {r.get('duplicates', {}) or 0}, replay {r.get('replay_agrees')}",
              flush=True)
    return {"runs": len(runs), "kills": sum(len(r["kills"]) for r in runs),
            "kills_before_the_run_existed": sum(1 for r in runs for k in r["kills"]
                                                if k["events"] == 0),
            "kills_leaving_a_torn_line": sum(1 for r in runs for k in r["kills"]
                                             if k["last_event"] == "a torn line"),
            "kills_after_event": dict(Counter(k["last_event"] for r in runs for k in r["kills"])),
            "kill_attempts_too_late": sum(r.get("missed", 0) for r in runs),
            "runs_identical": sum(r["identical"] for r in runs),
            "duplicates_found": sum(sum(r.get("duplicates", {}).values()) for r in runs),
            "replays_agreeing": sum(bool(r.get("replay_agrees")) for r in runs),
            "tracebacks": sum(r.get("tracebacks", 0) for r in runs),
            "reference_wall_s": round(prof.reference()["wall_s"], 1),
            "reference_events": prof.reference()["events"], "detail": runs}


# ---- part 2: host memory under hostile frames (each case in a fresh process) -------------------

FORGED = '''
import os, sys

def improve_algorithm(initial_solution, utility, language_model):
    fd = sys.modules["__main__"].CHAN.out_fd  # the harness's own channel
    os.write(fd, b'{"n":"' + b"f" * 32 + b'","s":0,"t":"result","i":0,"status":"ok","value":"')
    chunk = b"x" * (1 << 20)
    for _ in range(MB):
        os.write(fd, chunk)
    os.write(fd, b'"}\\n')
    return initial_solution + "# forged\\n"
'''
NESTED = '''
import os, sys

def improve_algorithm(initial_solution, utility, language_model):
    chan = sys.modules["__main__"].CHAN
    nonce, fd = chan.nonce, chan.out_fd  # reading them is reported (a frame each)
    head = '{"n":"%s","s":%d,"t":"done","returned":' % (nonce, chan.seq)
    os.write(fd, head.encode() + b"[" * DEPTH + b"]" * DEPTH + b"}\\n")
    return initial_solution + "# nested\\n"
'''
RETURN_IMPROVER = '''
def improve_algorithm(initial_solution, utility, language_model):
    return "x" * (MB * 1_000_000)
'''
RETURN_SOLUTION = '''
def algorithm(train_samples, train_parity, test_samples):
    return "x" * (MB * 1_000_000)
'''
RACE = '''
import threading, time

def improve_algorithm(initial_solution, utility, language_model):
    n = {"answered": 0, "refused": 0, "busy": 0, "lm": 0, "lm_refused": 0, "started": 0}
    lock = threading.Lock()
    gate = threading.Event()

    def ask():
        gate.wait()
        try:
            language_model.prompt("expert", "rewrite")
            key = "lm"
        except Exception:
            key = "lm_refused"
        with lock:
            n[key] += 1
        while True:
            try:
                utility(initial_solution)
            except Exception as e:
                if "in flight" in str(e):
                    with lock:
                        n["busy"] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    n["refused"] += 1
                return
            with lock:
                n["answered"] += 1

    threads = []
    for _ in range(THREADS):
        t = threading.Thread(target=ask)
        try:
            t.start()
        except RuntimeError:
            break
        threads.append(t)
    n["started"] = len(threads)
    gate.set()
    for t in threads:
        t.join()
    return initial_solution + "\\n# race " + " ".join(f"{k}={v}" for k, v in n.items()) + "\\n"
'''
TRIVIAL = '''
def improve_algorithm(initial_solution, utility, language_model):
    return initial_solution + "# unchanged\\n"
'''


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_case(name: str, a: argparse.Namespace) -> dict:
    """One hostile execution in this process (a fresh one per case)."""
    import threading

    from stop.models import ScriptedModel
    from stop.models.gateway import Gateway, LanguageModel
    from stop.runs.recorders import NullRecorder
    from stop.sandbox import ImproveJob, open_sandbox
    from stop.sandbox.records import ExecLimits
    from stop.sandbox.standalone import SEED_SOLUTION, score_small, small_task
    from stop.tasks.scoring import score_solution

    sandbox = open_sandbox("docker")
    out: dict[str, Any] = {"case": name, "rss_before_mb": round(_hwm_mb(), 1)}
    t0 = time.monotonic()
    try:
        if name in ("solution returns", "baseline solution"):
            src = (RETURN_SOLUTION.replace("MB", str(a.return_mb)) if name == "solution returns"
                   else SEED_SOLUTION)
            task = small_task(1, per_call_s=30.0)
            rep = score_solution(task, src, split="val", sandbox=sandbox, recorder=NullRecorder())
            out.update(status=rep.exec_status, rules=sorted({f.rule for f in rep.findings}),
                       score=rep.score)
        elif name == "threads race":
            host = {"utility": 0}
            lock, slots = threading.Lock(), threading.BoundedSemaphore(2)  # --jobs 2

            def utility_fn(source: str) -> float:
                with lock:
                    host["utility"] += 1
                with slots:
                    return score_small(sandbox, source, n=2)

            from stop.core.improver import run_improver_outcome

            model = ScriptedModel([{"match": None, "texts": [f"```python\n{SEED_SOLUTION}```"]}],
                                  name="scripted:race")
            lm = LanguageModel(Gateway(model, recorder=NullRecorder(), use_cache=False),
                               budget=4, max_responses_per_call=6, scope="bench/race/lm")
            o = run_improver_outcome(RACE.replace("THREADS", str(a.threads)),
                                     initial_solution=SEED_SOLUTION, description="LPN",
                                     utility_fn=utility_fn, lm=lm, sandbox=sandbox,
                                     recorder=NullRecorder(), limits=ExecLimits(wall_s=600),
                                     utility_budget=a.race_budget)
            inside = dict(re.findall(r"(\w+)=(\d+)", o.returned.split("# race")[-1]))
            inside = {k: int(v) for k, v in inside.items()}
            out.update(status=o.status, budget=a.race_budget, host_utility_calls=host["utility"],
                       services_used=o.utility_calls, inside=inside, lm_budget=4,
                       lm_calls=lm.calls_used, model_requests=len(model.requests))
            out["exact"] = (host["utility"] == o.utility_calls == inside.get("answered")
                            == a.race_budget and len(model.requests) == inside.get("lm") == 4
                            and inside.get("refused") == inside.get("started"))
        else:
            src = {"baseline improver": TRIVIAL,
                   "forged frame": FORGED.replace("MB", str(a.forged_mb)),
                   "nested frame": NESTED.replace("DEPTH", str(a.depth)),
                   "improver returns": RETURN_IMPROVER.replace("MB", str(a.return_mb))}[name]
            job = ImproveJob(source=src, initial_solution="x = 1\n", description="",
                             utility_budget=1, lm_budget=1, max_responses_per_call=1)
            # 1 GB inside, so the 150 MB value (and its JSON copy) reaches the host at all.
            r = sandbox.execute(job, limits=ExecLimits(wall_s=120, memory_mb=1024),
                                role="improver", services=None)
            value = r.value.get("returned") if isinstance(r.value, dict) else None
            out.update(status=r.status, rules=sorted({f.rule for f in r.findings}),
                       returned=None if value is None else str(value)[:40])
    finally:
        sandbox.close()
    out.update(wall_s=round(time.monotonic() - t0, 2), vm_hwm_mb=round(_hwm_mb(), 1))
    return out


CASES = ("baseline improver", "baseline solution", "forged frame", "nested frame",
         "improver returns", "solution returns", "threads race")


def part_memory(a: argparse.Namespace) -> dict:
    cases = []
    for name in CASES:
        argv = [sys.executable, str(Path(__file__).resolve()), "--case", name,
                *(f"--{k.replace('_', '-')}={getattr(a, k)}" for k in
                  ("forged_mb", "depth", "return_mb", "threads", "race_budget"))]
        proc = subprocess.Popen(argv, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(proc.pid, 0)
        out, err = proc.stdout.read().decode(), proc.stderr.read().decode(errors="replace")
        rc = os.waitstatus_to_exitcode(status)
        r = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {
            "case": name, "error": err.strip()[-600:]}
        r.update(rc=rc, peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
                 traceback="Traceback" in err)
        cases.append(r)
        print(f"  {name:17} {r.get('wall_s', 0):6.1f} s  peak RSS {r['peak_rss_mb']:6.1f} MB  "
              f"status {r.get('status')}  "
              f"rules {r.get('rules', '')}{'  exact ' + str(r['exact']) if 'exact' in r else ''}",
              flush=True)
    hostile = [c for c in cases if not c["case"].startswith("baseline")]
    return {"max_peak_rss_mb": max(c["peak_rss_mb"] for c in hostile),
            "baseline_peak_rss_mb": {c["case"]: c["peak_rss_mb"] for c in cases
                                     if c["case"].startswith("baseline")},
            "budget_exact": all(c.get("exact") for c in cases if c["case"] == "threads race"),
            "cases": cases}


# ---- part 3: one owner per run ----------------------------------------------------------------

def _refused(out: subprocess.CompletedProcess, owner: int) -> dict:
    lines = out.stderr.strip().splitlines()
    return {"rc": out.returncode, "stderr": out.stderr.strip()[:300],
            "ok": out.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ")
            and f"process {owner}" in lines[0] and "Traceback" not in out.stderr}


def _wait_owned(run_dir: Path, pid: int, events: int, timeout: float = 300) -> bool:
    from stop.runs import lock

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = run_dir / "events.jsonl"
        n = len(log.read_bytes().splitlines()) if log.exists() else 0
        if lock.owner(run_dir) == pid and n >= events:
            return True
        time.sleep(0.05)
    return False


def part_lock(prof: Profile) -> dict:
    from stop.runs import lock

    ref = prof.reference()
    runs = prof.tmp / "locked"
    first = spawn(prof.start_args(), runs)
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/events.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    run_dir = list(runs.glob("*/events.jsonl"))[0].parent
    checks: dict[str, Any] = {}
    _wait_owned(run_dir, first.pid, 3)
    t0 = time.monotonic()
    checks["resume of a running run"] = _refused(
        stop("run", "--resume", "latest", "--quiet", runs=runs, timeout=120), first.pid)
    checks["resume of a running run"]["wall_s"] = round(time.monotonic() - t0, 2)
    kill9(first)
    checks["owner after kill -9 of the run"] = lock.owner(run_dir)
    a = spawn(["run", "--resume", "latest", "--quiet"], runs)
    _wait_owned(run_dir, a.pid, 0)
    b = stop("run", "--resume", "latest", "--quiet", runs=runs, timeout=120)
    checks["second of two resumes"] = _refused(b, a.pid)
    alive = a.poll() is None
    kill9(a)
    checks["owner after kill -9 of the resume"] = lock.owner(run_dir)
    checks["lock file left"] = (run_dir / "lock").exists()
    c = stop("run", "--resume", "latest", "--quiet", runs=runs, timeout=900)
    run = open_run(runs)
    result = {"second_refused": checks["resume of a running run"]["ok"]
              and checks["second of two resumes"]["ok"],
              "first_resume_was_running_when_killed": alive,
              "resumed_after_kill": c.returncode == 0,
              "identical": c.returncode == 0 and final_state(run) == ref["state"],
              "duplicates": duplicates(run.log.path), "checks": checks,
              "final_stderr": c.stderr.strip()[-300:]}
    print(f"  refused {result['second_refused']}, resumed after kill -9 "
          f"{result['resumed_after_kill']}, identical {result['identical']}", flush=True)
    return result


# ---- part 4: damaged runs ---------------------------------------------------------------------

def _insert(run_dir: Path, line: bytes, at: int = 3) -> None:
    log = run_dir / "events.jsonl"
    lines = log.read_bytes().splitlines(True)
    log.write_bytes(b"".join(lines[:at] + [line] + lines[at:]))


DAMAGE = {
    "notobj": lambda d: _insert(d, b"[1, 2]\n"),
    "utf8": lambda d: _insert(d, b'{"seq": 3, "type": "round_start", "round": 1, "x": "\xff"}\n'),
    "fields": lambda d: _insert(d, b'{"seq": 3, "type": "round_end", "round": 1}\n'),
    "cfglist": lambda d: (d / "config.json").write_text("[1, 2]\n"),
}


def _digest(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): hash(p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


def part_damage(prof: Profile, healthy: int) -> dict:
    ref = prof.reference()
    root = prof.tmp / "damaged"
    rid = ref["dir"].name
    copy = lambda name: shutil.copytree(ref["dir"], root / name,  # noqa: E731
                                        ignore=shutil.ignore_patterns("lock"))
    good = [f"{rid}-ok{i}" for i in range(healthy)]
    for name in good:
        copy(name)
    for suffix, how in DAMAGE.items():
        how(copy(f"{rid}-{suffix}"))
    (copy(f"{rid}-nocfg") / "config.json").unlink()
    before = _digest(root)
    listing = stop("runs", runs=root, timeout=120)
    rows = {ln.split()[0]: ln for ln in listing.stdout.splitlines()[1:] if ln.strip()}
    warnings = listing.stderr.splitlines()
    damaged = {}
    for suffix in DAMAGE:
        name = f"{rid}-{suffix}"
        why = [w for w in warnings if f"{name}:" in w]
        damaged[suffix] = {"listed_damaged": "damaged" in rows.get(name, ""),
                           "reason": why[0][:200] if why else None}
    nocfg_warn = [w for w in warnings if f"{rid}-nocfg" in w]
    commands = []
    for suffix in DAMAGE:
        ref_id = f"{rid}-{suffix}"
        for args in (["show", ref_id], ["show", ref_id, "--json"], ["show", ref_id, "--round",
                     "1", "--code"], ["diff", ref_id, "0", "1"], ["replay", ref_id],
                     ["run", "--resume", ref_id, "--rounds", "2", "--quiet"], ["audit", ref_id],
                     ["report", ref_id], ["transfer", ref_id, "--trials", "1"]):
            out = stop(*args, runs=root, timeout=300)
            lines = out.stderr.strip().splitlines()
            one = out.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ")
            # exit 0: it read only files the damage left intact (an improver, an intact log)
            answered = out.returncode == 0 and "Traceback" not in out.stderr
            commands.append({"args": args[:1] + args[2:], "damage": suffix, "rc": out.returncode,
                             "outcome": "one error line" if one else "answered" if answered
                             else "other", "traceback": "Traceback" in out.stderr,
                             "stderr": out.stderr.strip()[:200]})
    nocfg_show = stop("show", f"{rid}-nocfg", runs=root, timeout=120)
    result = {
        "healthy": healthy, "healthy_listed": sum("finished" in rows.get(n, "") for n in good),
        "damaged_listed_with_reason": sum(d["listed_damaged"] and bool(d["reason"])
                                          for d in damaged.values()),
        "damaged": damaged, "listing_rc": listing.returncode,
        "nocfg_listed": "finished" in rows.get(f"{rid}-nocfg", ""),
        "nocfg_warning": nocfg_warn[0][:200] if nocfg_warn else None,
        "nocfg_show_rc": nocfg_show.returncode,
        "commands": len(commands),
        "commands_one_line": sum(c["outcome"] == "one error line" for c in commands),
        "commands_answered": sorted({" ".join(c["args"]) + f" ({c['damage']})" for c in commands
                                     if c["outcome"] == "answered"}),
        "commands_other": [c for c in commands if c["outcome"] == "other"],
        "tracebacks": sum(c["traceback"] for c in commands) + ("Traceback" in listing.stderr),
        "files_unchanged": _digest(root) == before, "detail": commands}
    print(f"  listed {result['healthy_listed']}/{healthy} healthy, "
          f"{result['damaged_listed_with_reason']}/{len(DAMAGE)} damaged with a reason, "
          f"config-less {result['nocfg_listed']}; of {len(commands)} commands "
          f"{result['commands_one_line']} one error line, {len(result['commands_answered'])} "
          f"answered from intact files, {len(result['commands_other'])} other; tracebacks "
          f"{result['tracebacks']}, files unchanged {result['files_unchanged']}", flush=True)
    for c in result["commands_answered"]:
        print(f"    answered: {c}", flush=True)
    return result


# ---- part 5: bad arguments --------------------------------------------------------------------

def part_args(prof: Profile) -> dict:
    tmp = prof.tmp / "args"
    (tmp / "empty-task").mkdir(parents=True)
    (tmp / "a-file").write_text("")
    runs = tmp / "runs"
    runs.mkdir()
    rid = prof.reference()["dir"].name
    shutil.copytree(prof.reference()["dir"], runs / rid, ignore=shutil.ignore_patterns("lock"))
    cases = {
        "unknown task": (["run", "no_such_task", "--quiet"], runs),
        "unknown run id": (["show", "no-such-run"], runs),
        "resume of an unknown run": (["run", "--resume", "no-such-run", "--quiet"], runs),
        "--set improver_wall_s=NaN": (["run", "--quiet", "--set", "improver_wall_s=NaN"], runs),
        "--set improver_wall_s=Infinity":
            (["run", "--quiet", "--set", "improver_wall_s=Infinity"], runs),
        "--set an unknown key": (["run", "--quiet", "--set", "no_such_key=1"], runs),
        "--set rounds=abc": (["run", "--quiet", "--set", "rounds=abc"], runs),
        "STOP_RUNS_DIR is a file": (["runs"], tmp / "a-file"),
        "stop run with STOP_RUNS_DIR a file": (["run", "--quiet"], tmp / "a-file"),
        "a missing file for stop exec": (["exec", str(tmp / "missing.py")], runs),
        "a missing file for stop score": (["score", "parity_noise", str(tmp / "missing.py")],
                                          runs),
        "a missing scripted-model file": (["run", "--quiet", "--model",
                                           f"scripted:{tmp / 'missing.json'}"], runs),
        "a task folder without task.toml": (["run", str(tmp / "empty-task"), "--quiet"], runs),
        "a round the run does not have": (["show", rid, "--round", "7"], runs),
        "diff against a missing round": (["diff", rid, "0", "9"], runs),
        "an unknown audit finding": (["audit", "show", "no-such-finding"], runs),
        "transfer to an unknown task": (["transfer", rid, "--tasks", "no_such_task"], runs),
    }
    out = []
    for name, (args, root) in cases.items():
        p = stop(*args, runs=root, timeout=120)
        lines = p.stderr.strip().splitlines()
        out.append({"case": name, "args": args, "rc": p.returncode, "stderr_lines": len(lines),
                    "one_error_line": p.returncode != 0 and len(lines) == 1
                    and lines[0].startswith("error: "), "traceback": "Traceback" in p.stderr,
                    "stderr": p.stderr.strip()[:240]})
    result = {"cases": len(out), "one_error_line": sum(c["one_error_line"] for c in out),
              "tracebacks": sum(c["traceback"] for c in out),
              "nonzero_exit": sum(c["rc"] != 0 for c in out), "detail": out}
    print(f"  {result['one_error_line']}/{len(out)} one error line, "
          f"{result['nonzero_exit']}/{len(out)} non-zero exit, tracebacks "
          f"{result['tracebacks']}", flush=True)
    for c in out:
        if not c["one_error_line"]:
            print(f"    {c['case']}: exit {c['rc']}, {c['stderr_lines']} lines: "
                  f"{c['stderr'][:160]!r}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help="Comma-separated: " + ",".join(PARTS))
    ap.add_argument("--runs", type=int, default=12, help="Killed runs.")
    ap.add_argument("--kills-per-run", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="Seed of the runs and the kill moments.")
    ap.add_argument("--forged-mb", type=int, default=400)
    ap.add_argument("--depth", type=int, default=300_000)
    ap.add_argument("--return-mb", type=int, default=150)
    ap.add_argument("--threads", type=int, default=60)
    ap.add_argument("--race-budget", type=int, default=25, help="Utility budget the threads race.")
    ap.add_argument("--healthy", type=int, default=3, help="Healthy runs in the damaged folder.")
    ap.add_argument("--keep", type=Path, help="Keep the run folders here instead of a temp dir.")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one memory case, in this process
    a = ap.parse_args()
    if a.case:
        print(json.dumps(run_case(a.case, a)))
        return
    parts = [p for p in a.parts.split(",") if p]
    if set(parts) - set(PARTS):
        raise SystemExit(f"unknown part(s): {sorted(set(parts) - set(PARTS))}")
    tmp = a.keep or Path(tempfile.mkdtemp(prefix="stop-bench-reliability-"))
    tmp.mkdir(parents=True, exist_ok=True)
    prof = Profile(tmp, a.seed)
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "load_before": load()},
        "settings": {**{k: getattr(a, k) for k in ("runs", "kills_per_run", "seed", "forged_mb",
                                                   "depth", "return_mb", "threads",
                                                   "race_budget", "healthy")},
                     "profile": SETTINGS}}
    started = time.monotonic()
    try:
        for part in parts:
            print(f"{part} (load {load()})", flush=True)
            t0 = time.monotonic()
            r = {"kill": lambda: part_kill(prof, a), "memory": lambda: part_memory(a),
                 "lock": lambda: part_lock(prof),
                 "damage": lambda: part_damage(prof, a.healthy),
                 "args": lambda: part_args(prof)}[part]()
            r["wall_s"], r["load_after"] = round(time.monotonic() - t0, 1), load()
            results[part] = r
    finally:
        if a.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["load_after"] = load()
    print(f"done in {results['wall_s']:.0f} s (load {load()})")
    print(json.dumps({p: {k: v for k, v in results[p].items() if not isinstance(v, list | dict)}
                      for p in parts}, indent=1))
    if set(parts) == set(PARTS):
        RESULT.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
