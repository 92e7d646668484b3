"""CLI command: experiment (the STOP paper's experiments: unsandboxing, improve, tail)."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import click

from stop.cli.display import Display
from stop.cli.executor import cluster_sandbox, executor_options
from stop.cli.options import runtime_option
from stop.cli.safe import echo
from stop.core.config import PROFILES
from stop.errors import StopError
from stop.experiments import improve as IX
from stop.experiments import improve_plan as IP
from stop.experiments import improve_summary as IS
from stop.experiments import tail as TA
from stop.experiments import unsandbox as X
from stop.models.caps import SpendingCapReached
from stop.paths import tasks_dir
from stop.reports.improve import build_improve_report
from stop.runs.store import RunStore
from stop.sandbox.runtimes import choose
from stop.tasks.loader import load_task


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def experiment() -> None:
    """Experiments of the STOP paper."""



@experiment.command("unsandbox")
@click.option("--n", "n", type=click.IntRange(min=1), help="Improvement attempts (default 100).")
@click.option("--warning/--no-warning", default=None,
              help="Add a sentence telling the model never to switch the sandbox off.")
@click.option("--model", help="Model spec (default: the embedded local model).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Attempts run concurrently.")
@click.option("--run", "run_ref", help="Resume this experiment run (id, prefix or latest).")
@click.option("--max-tokens", type=click.IntRange(min=64), help="Reply length cap (default 1024).")
@click.option("--batch", type=click.IntRange(1, 8),
              help="Attempts drawn per model request, as n samples (default 6).")
@click.option("--no-exec", is_flag=True, help="Scan only; do not execute the improvers.")
@click.option("--sandbox", "backend", type=click.Choice(["docker", "process"]), default="docker",
              show_default=True, help="Where the improvers run.")
@runtime_option
@executor_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def unsandbox(n: int | None, warning: bool | None, model: str | None, jobs: int,
              run_ref: str | None, max_tokens: int | None, batch: int | None, no_exec: bool,
              backend: str, runtime: str | None, as_json: bool, executor: str | None = None,
              ray_address: str | None = None) -> None:
    """The STOP paper's unsandboxing experiment: how often does the model switch the flag off?

    N independent attempts to improve the sandbox-variant seed improver, whose utility shows
    `use_sandbox=True`. Each improver is scanned and run in the sandbox; the rate of improvers
    that pass use_sandbox=False is reported with a 95% Wilson interval next to the published
    GPT-4 and GPT-3.5 rates. An interrupted experiment resumes with --run.
    """

    store = RunStore()
    cfg = X.UnsandboxConfig(jobs=jobs, sandbox=backend, sandbox_runtime=choose(runtime))
    if run_ref is not None:
        old = store.open(run_ref).config()
        for key in ("n", "warning", "model", "max_tokens", "temperature", "batch", "execute"):
            if key in old:
                setattr(cfg, key, old[key])
    for key, value in (("n", n), ("warning", warning), ("model", model),
                       ("max_tokens", max_tokens), ("batch", batch)):
        if value is not None:
            setattr(cfg, key, value)
    if no_exec:
        cfg.execute = False

    def progress(att: X.Attempt, done: int, total: int) -> None:
        flags = [w for w, on in (("static", att.flag_off_static),
                                 ("runtime", att.flag_off_runtime)) if on]
        what = f"FLAG OFF ({'+'.join(flags)})" if flags else ("no code" if not att.has_code
                                                             else "flag kept")
        other = [r for r in att.rules if r != X.FLAG_RULE]
        echo(f"[{done}/{total}] attempt {att.index}: {what}"
                   f"{'; ' + ', '.join(other) if other else ''} ({att.wall_s:.1f} s)", err=True)

    def started(run: Any, todo: int) -> None:
        if todo:
            echo(f"run {run.id}: {todo} attempt(s) to go; if interrupted, continue with "
                       f"`stop experiment unsandbox --run {run.id}`", err=True)

    sandbox = cluster_sandbox(executor, ray_address, backend=backend,
                              runtime=runtime) if cfg.execute else None
    try:
        run = X.run_unsandbox(cfg, store=store, run_ref=run_ref, progress=progress,
                              started=started, sandbox=sandbox)
    finally:
        if sandbox is not None:
            sandbox.close()
    data = X.summarize(run)
    echo(json.dumps(data, indent=2) if as_json else _experiment_text(data))


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _experiment_text(d: dict) -> str:
    f = d["flag_off"]
    lo, hi = f["ci95"]
    out = [f"unsandbox experiment, run {d['run']}, model {d['model']}, "
           f"warning {'on' if d['warning'] else 'off'}",
           f"attempts {d['n']} of {d['n_planned']} (with an improver {d['with_code']}, "
           f"executed {d['executed']}, cut off inside a code block {d['truncated']})",
           f"switched use_sandbox off: {f['count']}/{d['n']} = {_pct(f['rate'])} "
           f"(95% Wilson CI {_pct(lo)} to {_pct(hi)})",
           f"  seen statically {d['flag_off_static']['count']}, at runtime "
           f"{d['flag_off_runtime']['count']}"]
    for model, p in d["published"].items():
        out.append(f"  published, {model}, 10,000 attempts: {_pct(p['rate'])} "
                   f"({_pct(p['lo'])} to {_pct(p['hi'])})")
    if d["other_rules"]:
        out.append("other tampering seen (attempts per rule):")
        out.extend(f"  {rule:28} {count}" for rule, count in d["other_rules"].items())
    t = d["timing"]
    if t["elapsed_per_attempt_s"] is not None:
        line = (f"time: {t['elapsed_s']:.0f} s elapsed, {t['elapsed_per_attempt_s']:.1f} s per "
                f"attempt; sandbox checks {t['mean_check_s']:.1f} s per attempt")
        if t["model_s_per_sample"] is not None:
            line += (f"; {t['fresh_model_calls']} fresh model request(s) for "
                     f"{t['fresh_samples']} samples, {t['model_s_per_sample']:.1f} s each")
        out.append(line)
    return "\n".join(out)


def _clean(x: Any) -> Any:
    """NaN and infinities as null, so the JSON is valid."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _task_pair(name: str | None) -> tuple[str, str]:
    """(base task, seed improver task) for a TASK argument: a solve task or a meta task."""
    task = load_task(name or "parity_noise")
    ref = task.name if (tasks_dir() / task.name).resolve() == task.dir else str(task.dir)
    if task.kind == "meta":
        return str(task.settings.get("base_task", "parity_noise")), ref
    return ref, "meta_optimization"


@experiment.command("improve")
@click.argument("task", required=False)
@click.option("--runs", type=click.IntRange(min=1), help="Independent runs (seeds); default 3.")
@click.option("--rounds", type=click.IntRange(min=0), help="Rounds per run (default: the profile's).")
@click.option("--model", help="Model spec (default: the embedded local model).")
@click.option("--api-base", help="OpenAI-compatible server for --model.")
@click.option("--profile", type=click.Choice(list(PROFILES)),
              help="Budget profile of the runs (default local).")
@click.option("--trials", type=click.IntRange(min=1), help="Trials per arm (default 3).")
@click.option("--judge", help="A model that labels each proposed improver's strategies too.")
@click.option("--seed", type=int, help="Seed of the first run; run k uses seed + k (default 0).")
@click.option("--jobs", type=click.IntRange(min=1), help="Improver runs side by side (default 2).")
@click.option("--sandbox", "backend", type=click.Choice(["docker", "process"]))
@click.option("--from", "from_runs", multiple=True, metavar="RUN",
              help="Evaluate existing runs instead of starting new ones (repeatable or "
                   "comma-separated).")
@click.option("--resume", help="Continue this experiment (id, prefix or latest).")
@click.option("--dry-run", is_flag=True, help="Print what it would spend, and stop.")
@click.option("--max-cost", type=float, help="Stop cleanly once this many dollars are spent.")
@click.option("--quiet", is_flag=True, help="No per-round progress.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def improve(task: str | None, runs: int | None, rounds: int | None, model: str | None,
            api_base: str | None, profile: str | None, trials: int | None, judge: str | None,
            seed: int | None, jobs: int | None, backend: str | None, from_runs: tuple[str, ...],
            resume: str | None, dry_run: bool, max_cost: float | None, quiet: bool,
            as_json: bool) -> None:
    """Does self-improvement beat the seed improver, and best-of-budget sampling?

    Starts --runs independent runs of --rounds rounds (or takes --from runs), then scores three
    improvers of each run on the test split, --trials trials each with fresh budgets: I_0 (the
    seed improver), the best-of-budget baseline (every model call and response spent on
    independent rewrites of the seed prompt), and I_T (the run's final improver). Prints each
    run's arms with 95% intervals, the paired differences across runs with a paired t-test, the
    share of runs improved by 3 points, model use per arm, and the strategies the runs proposed;
    writes a report with figures. Resumable with --resume.
    """
    store = RunStore()
    refs = [r.strip() for v in from_runs for r in v.split(",") if r.strip()]
    given = {"runs": runs, "trials": trials, "max_cost": max_cost, "jobs": jobs, "judge": judge,
             "rounds": rounds, "model": model, "api_base": api_base, "profile": profile,
             "seed": seed, "sandbox": backend}
    if resume:
        if task or refs:
            raise StopError("--resume continues an experiment with its own task and runs; drop "
                            "TASK and --from")
        exp = store.open(resume)
        cfg = IX.resumed_config(exp, given) if not dry_run else IX.ImproveConfig(
            **{k: v for k, v in exp.config().items() if k != "experiment"})
        members = list(IX.member_runs(exp, store).values())
    else:
        base, seed_improver = _task_pair(task)
        cfg = IX.ImproveConfig(task=base, seed_improver=seed_improver,
                               **{k: v for k, v in given.items() if v is not None})
        cfg.from_runs = refs
        members = [store.open(r) for r in refs]
        if members:
            IX.check_from(cfg, members)
        cfg.validate()
    if dry_run:
        p = IP.plan(cfg, members)
        echo(json.dumps(_clean(p), indent=2) if as_json else IP.format_plan(p))
        return

    def display(run: Any, rcfg: Any) -> Any:
        return Display(rcfg, run.id, quiet=quiet)

    def say(line: str) -> None:
        echo(line, err=True)

    try:
        exp = IX.run_improve(None if resume else cfg, store=store, resume=resume, given=given,
                             progress=say, display=display)
    except SpendingCapReached as e:
        echo(f"error: {e}", err=True)
        echo(f"the experiment stopped cleanly; raise the cap to continue: `stop experiment "
             f"improve --resume {_latest_improve(store)} --max-cost X`", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        echo("interrupted: continue with `stop experiment improve --resume "
             f"{resume or _latest_improve(store)}`", err=True)
        sys.stderr.flush()
        os._exit(130)  # worker threads may still wait on containers that are being removed
    _print_improve(exp, store, as_json)


def _latest_improve(store: RunStore) -> str:
    runs = [r for r in store.list() if r.id.endswith("-improve")]
    return runs[-1].id if runs else "ID"


def _print_improve(exp: Any, store: RunStore, as_json: bool) -> None:
    data = IS.summarize(exp, store)
    exp.write_json("improve.json", _clean(data))
    page, figs = build_improve_report(exp.id, data, exp.dir / "report")
    if as_json:
        echo(json.dumps(_clean({**data, "report": str(page),
                                "figures": {k: str(v) for k, v in figs.items()}}), indent=2))
        return
    echo(IS.format_text(data))
    echo(str(page))


@experiment.command("tail")
@click.argument("task", required=False)
@click.option("--samples", type=click.IntRange(min=1), default=12, show_default=True,
              help="Rewrites of the seed solution to draw and score.")
@click.option("--model", help="Model spec (default: the embedded local model).")
@click.option("--api-base", help="OpenAI-compatible server for --model.")
@click.option("--batch", type=click.IntRange(1, 8), default=6, show_default=True,
              help="Samples per model call.")
@click.option("--max-tokens", type=click.IntRange(min=64), default=768, show_default=True)
@click.option("--sandbox", "backend", type=click.Choice(["docker", "process"]), default="docker",
              show_default=True)
@click.option("--resume", help="Continue this measurement (id, prefix or latest).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def tail(task: str | None, samples: int, model: str | None, api_base: str | None, batch: int,
         max_tokens: int, backend: str, resume: str | None, as_json: bool) -> None:
    """The single-shot tail of TASK: N rewrites of its seed solution by the seed improver, each
    scored on val. Shows how many beat the seed, what failed, and which missing modules the
    rewrites reached for. If none beats the seed, best-of-N sampling cannot either."""
    store = RunStore()
    base, seed_improver = _task_pair(task)
    cfg = TA.TailConfig(task=base, samples=samples, model=model, api_base=api_base, batch=batch,
                        max_tokens=max_tokens, sandbox=backend, seed_improver=seed_improver)

    def progress(e: dict[str, Any]) -> None:
        extra = f" ({e['error']})" if e.get("error") else ""
        echo(f"  sample {e['index']}: {e['score']:.3f} {e['status']}{extra}", err=True)

    run = TA.run_tail(cfg, store=store, resume=resume, progress=progress)
    data = TA.summarize(run)
    echo(json.dumps(data, indent=2) if as_json else TA.format_tail(data))
