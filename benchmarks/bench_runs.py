"""Reading runs with large logs: `stop runs`, `stop show` and the log reading of a resume.

Builds, in a temp dir, a runs folder of 100 runs: 99 small ones and one whose events.jsonl is
about 200 MB (25 rounds of model calls with 2 x 3 kB replies, sandbox executions, scores and
utility calls, as a long paper-budget run writes them), each with the summary.json the loop
writes at its round ends. Then, each in a fresh process, measures wall time and peak RSS of:

  startup         `stop runs` on an empty folder: the interpreter and the CLI's imports
  runs            `stop runs` over the 100 runs
  runs --json     `stop runs --json`
  show            `stop show BIG`
  runs, killed    `stop runs` after the big run logged one more round (8 MB) past its summary
                  and was killed (the listing folds only what came after the summary)
  runs, no summ.  `stop runs` with the big run's summary.json gone (the whole log is folded)
  resume reading  what `stop run --resume BIG` does before its first round: the loop's pass
                  over the log (memo, evaluations, recorded replies), finished rounds, summary

Usage: python benchmarks/bench_runs.py [--mb 200] [--code DIR]
  --code DIR   measure the stop checkout in DIR instead (e.g. an older release, for a before
               and after); the runs folder is always written by this checkout.
Writes benchmarks/results/runs.json and prints a table. Timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stop.core.config import RunConfig  # noqa: E402
from stop.runs.store import RunStore  # noqa: E402
from stop.runs.summary import write_summary  # noqa: E402

TEXT = "x = 1\n" * 500  # a 3 kB reply


def _line(seq: int, ts: float, **event: object) -> str:
    return json.dumps({"seq": seq, "ts": round(ts, 3), **event}, separators=(",", ":")) + "\n"


def _round_lines(seq: int, t: int, units: int, rng: random.Random) -> list[str]:
    """One round as the loop logs it: calls, executions, scores, utility calls, the decision."""
    ts = 1.7e9 + t * 3600
    out = [_line(seq, ts, type="round_start", round=t, incumbent_hash="0" * 16)]
    for u in range(units):
        scope = f"s0/r{t}/self/u{u:010x}.0/t0"
        out.append(_line(seq + len(out), ts, type="model_call", round=t, scope=f"{scope}/lm",
                         call_index=0, key=f"{t:04d}{u:060d}", model="bench", n=2,
                         prompt_tokens=900, completion_tokens=700, cost_usd=0.0012,
                         latency_s=1.5, cached=False, texts=[TEXT, TEXT]))
        for _ in range(3):
            out.append(_line(seq + len(out), ts, type="sandbox_exec", round=t, role="solution",
                             kind="solve", limits={"wall_s": 2.0, "memory_mb": 512},
                             service_requests=0, status="ok", exit_code=0, signal=None,
                             oom_killed=False, wall_s=0.41, stdout_bytes=0, stderr_bytes=0,
                             limit_fired=None, backend="docker", candidate_hash="1" * 16,
                             findings=0))
            score = rng.random()
            out.append(_line(seq + len(out), ts, type="task_score", round=t, task="parity_noise",
                             split="val", score=score, counts={"ok": 20}, candidate_hash="1" * 16,
                             exec_status="ok", wall_s=0.5))
            out.append(_line(seq + len(out), ts, type="utility_call", round=t, scope=scope,
                             utility="parity_noise", solution_hash=f"{u:016x}", occurrence=0,
                             value=score))
    scores = {"val": 0.6, "test": 0.6, "val_scores": [0.6], "test_scores": [0.6]}
    for who in ("incumbent", "candidate"):
        for split in ("val", "test"):
            out.append(_line(seq + len(out), ts, type="evaluation", round=t, who=who, split=split,
                             scores=[0.6], mean=0.6, candidate_hash="2" * 16, fallbacks=[""]))
    out.append(_line(seq + len(out), ts + 3000, type="round_end", round=t, adopted=False,
                     reason="candidate does not beat incumbent", incumbent_hash="0" * 16,
                     candidate_hash="2" * 16, kept_hash="0" * 16, incumbent=scores,
                     candidate=scores, model_calls=units, cached_calls=0, tokens=1600 * units,
                     cost_usd=0.0012 * units, wall_s=3000.0, findings=0))
    return out


def make_run(store: RunStore, label: str, rounds: int, units: int, rng: random.Random) -> object:
    cfg = RunConfig.from_profile("tiny", rounds=rounds).to_dict()
    run = store.create(cfg, label=label)
    seq = 0
    with open(run.log.path, "w", encoding="utf-8") as f:
        first = _line(0, 1.7e9, type="run_start", config=cfg, pid=1, schema_version=1)
        f.write(first)
        seq = 1
        for t in range(1, rounds + 1):
            lines = _round_lines(seq, t, units, rng)
            f.writelines(lines)
            seq += len(lines)
        f.write(_line(seq, 1.7e9 + rounds * 3600 + 3500, type="run_end", status="finished"))
    write_summary(run)
    return run


def measure(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall time and peak RSS of one fresh process."""
    started = time.monotonic()
    # Not from the checkout's folder: `python -c` puts the working directory first on sys.path.
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[3:])} failed ({proc.returncode}): {err[-500:]}")
    return {"wall_s": round(wall, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


RESUME_READ = """
import sys
from dataclasses import fields
from stop.core.config import RunConfig
from stop.core.loop import Rounds
from stop.models import ScriptedModel
from stop.runs.store import RunStore
try:
    from stop.runs.summary import finished_rounds, write_summary
except ImportError:  # an older checkout: the loop held these
    from stop.core.loop import finished_rounds, summarize
    def write_summary(run):
        run.write_json("summary.json", summarize(run))
run = RunStore().open(sys.argv[1])
known = {f.name for f in fields(RunConfig)}  # an older checkout knows fewer settings
cfg = RunConfig.from_dict({k: v for k, v in run.config().items() if k in known})
finished_rounds(run)
Rounds(run, cfg, model=ScriptedModel([{"match": None, "texts": ["x"]}]), sandbox=None)
write_summary(run)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="Size of the big run's log (MB).")
    ap.add_argument("--code", type=Path, default=ROOT, help="The stop checkout to measure.")
    a = ap.parse_args()
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="stop-bench-runs-"))
    try:
        store = RunStore(tmp / "runs")
        t0 = time.monotonic()
        for i in range(99):
            make_run(store, f"small{i:02d}", rounds=2, units=10, rng=rng)
        per_unit = (len("".join(_round_lines(0, 1, 11, rng)))
                    - len("".join(_round_lines(0, 1, 1, rng)))) / 10
        units = max(1, int(a.mb * 1_000_000 / (25 * per_unit)))
        big = make_run(store, "big", rounds=25, units=units, rng=rng)
        log_mb = big.log.path.stat().st_size / 1e6
        print(f"wrote 100 runs in {time.monotonic() - t0:.0f} s; the big log is {log_mb:.0f} MB")

        env = {**os.environ, "STOP_RUNS_DIR": str(store.root), "PYTHONPATH": str(a.code),
               "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        cli = [sys.executable, "-c", "from stop.cli import main; main()"]
        results: dict[str, dict] = {}
        (tmp / "empty").mkdir()
        results["startup"] = measure([*cli, "runs"], {**env, "STOP_RUNS_DIR": str(tmp / "empty")})
        results["runs"] = measure([*cli, "runs"], env)
        results["runs --json"] = measure([*cli, "runs", "--json"], env)
        results["show"] = measure([*cli, "show", big.id], env)
        summary = big.dir / "summary.json"
        saved = summary.read_bytes()
        size = big.log.path.stat().st_size
        with open(big.log.path, "a", encoding="utf-8") as f:  # one more round, then killed
            f.write(_line(10**7, 1.8e9, type="run_resume", finished_rounds=[], pid=1))
            f.writelines(_round_lines(10**7 + 1, 26, units, rng)[:-1])
        results["runs, killed"] = measure([*cli, "runs"], env)
        summary.unlink()
        results["runs, no summ."] = measure([*cli, "runs"], env)
        with open(big.log.path, "r+b") as f:
            f.truncate(size)
        summary.write_bytes(saved)
        results["resume reading"] = measure([sys.executable, "-c", RESUME_READ, big.id], env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'':16}{'wall s':>8}{'peak RSS MB':>13}")
    for name, r in results.items():
        print(f"{name:16}{r['wall_s']:8.2f}{r['peak_rss_mb']:13.0f}")
    out = {"log_mb": round(log_mb), "runs": 100, "code": str(a.code), "results": results,
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    dest = ROOT / "benchmarks" / "results" / "runs.json"
    if a.code.resolve() == ROOT:
        dest.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
