"""The single-shot tail of a task: how good are N independent rewrites of its seed solution?

The seed improver itself draws them: it runs in the sandbox, as in any round, with one model
call of `batch` samples and enough utility calls to score each, on the task's seed solution,
until N samples are drawn. Every sample's code (taken with the same `extract_code` the improver
imports) is scored on the val split; samples the improver did not score itself (no code, or a
copy of the best so far) are scored here too. Each sample is one `tail_sample` event: its score,
whether it beats the seed, what failed (no code, a syntax error, a module the image lacks), and
the modules it imports. This is the ceiling of best-of-N sampling on the task: if no sample
beats the seed, a best-of-budget improver cannot either.

Resumable: a finished batch is not redone, and its model calls are served from the log.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from stop.container.helpers import extract_code
from stop.core.budget import Budget
from stop.core.improver import ImproverRun, RunContext
from stop.core.meta import meta_setup
from stop.errors import StopError
from stop.experiments.session import ending
from stop.models import resolve_model
from stop.models.base import Model
from stop.models.gateway import Gateway
from stop.runs.replay import recorded_replies
from stop.runs.store import Run, RunStore
from stop.sandbox import Sandbox, open_sandbox
from stop.sandbox.image import IMAGE_MODULES
from stop.sandbox.records import source_hash
from stop.tasks.loader import Task, load_task
from stop.tasks.scoring import ScoreReport, score_solution

_MISSING = re.compile(r"No module named '([\w.]+)'")


class TailError(StopError):
    """The tail measurement cannot start as asked."""


@dataclass
class TailConfig:
    task: str = "parity_noise"
    samples: int = 12
    model: str | None = None
    api_base: str | None = None
    batch: int = 6
    max_tokens: int = 768
    sandbox: str = "docker"
    seed_improver: str = "meta_optimization"

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": "tail", **asdict(self)}


def imports_of(code: str) -> list[str]:
    """Top-level modules the code imports that are neither standard library nor in the image."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return []
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            names.add(n.module.split(".")[0])
    return sorted(m for m in names if m not in sys.stdlib_module_names and m not in IMAGE_MODULES)


def classify(code: str, report: ScoreReport | None) -> tuple[str, str]:
    """(status, error) of one sample: ok, no code, syntax error, missing module, or failed."""
    if not code:
        return "no code", "the reply has no code"
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError) as e:
        return "syntax error", f"{type(e).__name__}: {e}"[:200]
    details = " ".join(o.detail for o in (report.outcomes if report else []) if o.status != "ok")
    missing = _MISSING.search(details)
    if missing:
        return "missing module", missing.group(1)
    failed = [o for o in (report.outcomes if report else []) if o.status != "ok"]
    if report and failed and len(failed) == len(report.outcomes):
        return "failed", (failed[0].detail or failed[0].status)[:200]
    return "ok", ""


def open_tail(store: RunStore, cfg: TailConfig, ref: str | None) -> Run:
    if cfg.samples < 1 or not 1 <= cfg.batch <= 8:
        raise TailError("--samples must be at least 1 and --batch between 1 and 8")
    task = load_task(cfg.task)
    if task.kind != "solve":
        raise TailError(f"task {task.name} is a {task.kind} task; the tail is measured on solve tasks")
    if ref is None:
        return store.create(cfg.to_dict(), label=f"tail-{task.name}")
    run = store.open(ref)
    old = run.config()
    if old.get("experiment") != "tail":
        raise TailError(f"run {run.id} is not a tail measurement")
    for key in ("task", "model", "batch", "max_tokens", "seed_improver"):
        if old.get(key) != getattr(cfg, key):
            raise TailError(f"run {run.id} was started with {key}={old.get(key)!r}; resume with "
                            f"the same settings")
    run.write_config(cfg.to_dict())
    return run


def run_tail(cfg: TailConfig, *, store: RunStore | None = None, resume: str | None = None,
             model: Model | None = None, sandbox: Sandbox | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Draw and score samples until `cfg.samples` are recorded; returns the measurement's run."""
    store = store or RunStore()
    run = open_tail(store, cfg, resume)
    task, seed = load_task(cfg.task), load_task(cfg.seed_improver)
    done = {int(e["index"]) for e in run.iter_events("tail_sample")}
    log = run.recorder(task=task.name)
    log.record("run_start", config=cfg.to_dict(), resumed=bool(done))
    with ending(log) as own:
        model = model or own(resolve_model(cfg.model, api_base=cfg.api_base))
        sandbox = sandbox or own(open_sandbox(cfg.sandbox))
        gateway = Gateway(model, recorder=log, recorded=recorded_replies(run))
        context = RunContext(sandbox=sandbox, gateway=gateway, recorder=log, jobs=1)
        reports: dict[str, ScoreReport] = {}

        def score(code: str) -> ScoreReport:
            h = source_hash(code)
            if h not in reports:
                reports[h] = score_solution(task, code, split="val", sandbox=sandbox, recorder=log)
            return reports[h]

        seed_score = score(task.seed_source).score
        if -1 not in done:
            log.record("tail_sample", index=-1, score=seed_score, status="seed",
                       candidate_hash=source_hash(task.seed_source))
        for b in range(-(-cfg.samples // cfg.batch)):
            want = [i for i in range(b * cfg.batch, min(cfg.samples, (b + 1) * cfg.batch))
                    if i not in done]
            if want:
                _batch(run, context, task, seed, cfg, b, score, seed_score, want, progress)
    return run


def _batch(run: Run, context: RunContext, task: Task, seed: Task, cfg: TailConfig, b: int,
           score: Callable[[str], ScoreReport], seed_score: float, want: list[int],
           progress: Callable[[dict[str, Any]], None] | None) -> None:
    """One run of the seed improver drawing `batch` samples; every sample scored and logged."""
    budget = Budget(lm_calls=1, responses_per_call=cfg.batch, utility_calls=cfg.batch + 1,
                    max_tokens=cfg.max_tokens, wall_s=900.0)
    scope = f"tail/{task.name}/{b}"
    improver = ImproverRun(context, budget, scope, use_sandbox_param=meta_setup(seed)[3])
    improver.run(seed.seed_source, initial_solution=task.seed_source,
                 description=task.description,
                 utility=improver.utility(lambda src: score(src).score, task.name))
    texts = [t for e in run.iter_events("model_call") if e["scope"] == f"{scope}/lm"
             for t in e["texts"]]
    for i in want:
        text = texts[i - b * cfg.batch] if i - b * cfg.batch < len(texts) else ""
        code = extract_code(text)
        report = score(code) if code else None
        status, error = classify(code, report)
        value = report.score if report else 0.0
        event = {"index": i, "score": value, "candidate_hash": source_hash(code) if code else "",
                 "status": status, "error": error, "imports": imports_of(code),
                 "beats_seed": value > seed_score}
        context.recorder.record("tail_sample", **event)
        if progress:
            progress(event)


def summarize(run: Run) -> dict[str, Any]:
    """The tail from the log: sorted scores, the seed's, how many beat it, what failed and why."""
    cfg = run.config()
    samples = {int(e["index"]): e for e in run.iter_events("tail_sample")}
    seed = samples.pop(-1, None)
    rows = [samples[i] for i in sorted(samples) if i < int(cfg.get("samples", len(samples)))]
    scores = sorted((float(e["score"]) for e in rows), reverse=True)
    seed_score = float(seed["score"]) if seed else None
    imports = Counter(m for e in rows for m in e.get("imports", []))
    missing = Counter(e.get("error") for e in rows if e.get("status") == "missing module")
    return {"run": run.id, "task": cfg.get("task"), "model": cfg.get("model") or "embedded",
            "samples": len(rows), "planned": cfg.get("samples"), "seed_val": seed_score,
            "scores": scores, "best": scores[0] if scores else None,
            "beats_seed": sum(1 for e in rows if e.get("beats_seed")),
            "zero": sum(1 for s in scores if s == 0.0),
            "status": dict(Counter(e.get("status") for e in rows)),
            "imports": dict(imports), "missing_modules": dict(missing)}


def format_tail(d: dict[str, Any]) -> str:
    seed = "-" if d["seed_val"] is None else f"{d['seed_val']:.3f}"
    out = [f"tail of {d['task']} (run {d['run']}, model {d['model']}): {d['samples']} of "
           f"{d['planned']} samples scored on val; seed {seed}",
           "scores: " + (", ".join(f"{s:.3f}" for s in d["scores"]) or "-"),
           f"beat the seed: {d['beats_seed']}/{d['samples']}; scored 0: {d['zero']}",
           "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(d["status"].items()))]
    if d["imports"]:
        out.append("modules outside the image imported: "
                   + ", ".join(f"{k} ({v})" for k, v in sorted(d["imports"].items())))
    return "\n".join(out)
