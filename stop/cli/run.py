"""CLI commands: run (start or resume self-improvement), runs, show, diff, replay."""

from __future__ import annotations

import difflib
import json
import math
import os
import signal
import sys
import tempfile
import time
from typing import Any

import click

from stop.cli.display import Display
from stop.cli.safe import echo
from stop.core.config import PROFILES, ConfigError, RunConfig, profile_table
from stop.core.loop import execute, new_run, run_config
from stop.errors import StopError
from stop.models import resolve_model
from stop.models.base import ModelError, format_cost
from stop.models.caps import refuse_unpriced
from stop.models.replay import ReplayModel
from stop.paths import tasks_dir
from stop.runs.replay import compare_replay, recorded_replies
from stop.runs.store import RunStore
from stop.runs.summary import (
    finished_rounds,
    listed,
    summarize,
    summary_is_current,
    write_summary,
)
from stop.sandbox import open_sandbox
from stop.tasks.loader import TaskError, load_task

RUN_HELP = f"""Run self-improvement rounds: I_t = I_{{t-1}}(Û, I_{{t-1}}, L).

TASK is the downstream task the meta-utility scores improvers on (default parity_noise), or a
meta task: meta_optimization (the plain seed improver) or sandbox (the seed that calls
utility(solution, use_sandbox=True)). The model defaults to the embedded local one.
Progress goes to stderr; the run folder is printed on stdout at the end. Ctrl-C stops
cleanly; `stop run --resume RUN` continues a stopped or killed run.

\b
Profiles (options given on the command line win):
{profile_table()}
"""


# Scoring is repeatable (the harness seeds random and NumPy per call, replies come from the log),
# so a replay must reproduce every score exactly; --tolerance exists for time-limited tasks on a
# slower machine.
REPLAY_TOLERANCE = 0.0


def _open_run(ref: str) -> Any:

    return RunStore().open(ref)


def _check_log(run: Any) -> None:
    """A torn last line means the run's writer died mid-write: say so instead of guessing."""
    if run.log.torn_tail():
        raise StopError(f"run {run.id}: events.jsonl ends with a torn line (its writer was killed "
                        f"mid-write); `stop run --resume {run.id}` cuts it and continues the run, "
                        f"nothing else is lost")


def _resolve_task(name: str | None) -> tuple[str, str]:
    """(base task, seed improver task) for the TASK argument."""

    task = load_task(name or "parity_noise")
    # A task folder of the user's is kept by its absolute path, so resume finds it again.
    ref = task.name if (tasks_dir() / task.name).resolve() == task.dir else str(task.dir)
    if task.kind == "meta":
        base = str(task.settings.get("base_task", "parity_noise"))
        if load_task(base).kind != "solve":
            raise TaskError(f"task {task.name}: base_task {base} is not a solve task")
        return base, task.name
    return task.name, "meta_optimization"


def _run_rounds(get_run: Any, cfg: RunConfig, quiet: bool) -> Any:
    """Open the model and the sandbox, then the run (so a missing engine leaves no empty run
    behind), and execute its rounds. Ctrl-C or SIGTERM: log the interruption and exit 130."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    model = resolve_model(cfg.model, api_base=cfg.api_base, timeout_s=cfg.model_timeout_s)
    sandbox = open_sandbox(cfg.sandbox)
    run = None
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        run = get_run()
        with Display(cfg, run.id, quiet=quiet) as display:
            execute(run, cfg, model=model, sandbox=sandbox, listener=display)
    except KeyboardInterrupt:
        sandbox.close()
        model.close()
        if run is not None:
            echo(f"interrupted: resume with `stop run --resume {run.id}`", err=True)
        sys.stderr.flush()
        os._exit(130)  # worker threads may still wait on containers that are being removed
    finally:
        signal.signal(signal.SIGTERM, previous)
    sandbox.close()
    model.close()
    return run


def _refuse_unpriced_cap(cfg: RunConfig) -> None:
    """A cost cap on a model of unknown price is refused before the run is created or changed."""
    if cfg.max_cost_usd is not None:
        refuse_unpriced(resolve_model(cfg.model, api_base=cfg.api_base), cfg.max_cost_usd)


def cmd_run(task: str | None, rounds: int | None, model: str | None, api_base: str | None,
            profile: str | None, jobs: int | None, seed: int | None, sandbox: str | None,
            margin: float | None, resume: str | None, quiet: bool,
            settings: tuple[str, ...] = (), max_cost: float | None = None,
            max_tokens_total: int | None = None) -> None:

    if resume:
        given = [n for n, v in (("TASK", task), ("--model", model), ("--api-base", api_base),
                                ("--profile", profile), ("--seed", seed), ("--margin", margin),
                                ("--sandbox", sandbox), ("--set", settings or None))
                 if v is not None]
        if given:
            raise StopError(f"--resume continues a run with its own settings; drop {', '.join(given)} "
                            f"(only --rounds, --jobs, --max-cost and --max-tokens-total may change)")
        run = _open_run(resume)
        # Ours from this first check to the end of the command: a second resume is refused.
        click.get_current_context().with_resource(run.owned())
        cfg = run_config(run)
        done = finished_rounds(run)
        if rounds is not None:
            if rounds < max(done, default=0):
                raise StopError(f"run {run.id} already finished {max(done)} rounds; --rounds must be "
                                f">= {max(done)}")
            cfg.rounds = rounds
        if jobs is not None:
            cfg.jobs = jobs
        cfg.max_cost_usd = cfg.max_cost_usd if max_cost is None else max_cost
        cfg.max_tokens_total = cfg.max_tokens_total if max_tokens_total is None else max_tokens_total
        cfg.validate()
        _refuse_unpriced_cap(cfg)
        if max(done, default=0) >= cfg.rounds and summarize(run)["status"] == "finished":
            if not summary_is_current(run):  # killed after its last event: repair, not refuse
                write_summary(run)
                echo(f"run {run.id} already finished its {cfg.rounds} rounds; its summary.json "
                     f"was out of date and is repaired", err=True)
                echo(str(run.dir))
                return
            raise StopError(f"run {run.id} already finished its {cfg.rounds} rounds; pass --rounds N "
                            f"to continue it")
        run.write_config(cfg.to_dict())
        echo(f"resuming run {run.id} after round {max(done, default=0)}", err=True)
    else:
        base, seed_improver = _resolve_task(task)
        named = {"model": model, "api_base": api_base, "rounds": rounds, "jobs": jobs,
                 "seed": seed, "sandbox": sandbox, "margin": margin, "max_cost_usd": max_cost,
                 "max_tokens_total": max_tokens_total}
        overrides = {**parse_settings(settings), **{k: v for k, v in named.items() if v is not None}}
        cfg = RunConfig.from_profile(profile or "tiny", task=base, seed_improver=seed_improver,
                                     **overrides)
        _refuse_unpriced_cap(cfg)

    def get_run() -> Any:
        if resume:
            return run
        created = new_run(cfg)
        echo(f"run {created.id}: {cfg.rounds} round(s) on {cfg.task}, profile "
                   f"{cfg.profile}, model {cfg.model or 'embedded'}, sandbox {cfg.sandbox}",
                   err=True)
        return created

    run = _run_rounds(get_run, cfg, quiet)
    s = summarize(run)
    best = s["best"]
    if best["val"] is not None:
        echo(f"best meta-utility: val {best['val']:.4f}, test {best['test']:.4f} "
                   f"(round {best['round']})", err=True)
    echo(str(run.dir))


def parse_settings(items: tuple[str, ...]) -> dict[str, Any]:
    """--set KEY=VALUE pairs, each value parsed as JSON where it can be (numbers, null)."""
    from dataclasses import fields


    allowed = {f.name for f in fields(RunConfig)} - {"task", "seed_improver", "extra", "profile"}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                              f"{', '.join(sorted(allowed))}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def cmd_runs(as_json: bool) -> None:

    out = [listed(run) for run in RunStore().list()]
    for s in out:  # a damaged run is listed with its reason; the others are unaffected
        if s["status"] == "damaged":
            echo(f"warning: {s['error']}", err=True)
        elif s.get("note"):
            echo(f"note: run {s['id']}: {s['note']}", err=True)
    if as_json:
        echo(json.dumps(out, indent=2))
        return
    if not out:
        echo("no runs yet; start one with `stop run`", err=True)
        return
    rows = [[s["id"], str(s["task"]), str(s["model"]), f"{s['rounds_done']}/{s['rounds']}",
             _fmt(s["best"]["val"]), _fmt(s["best"]["test"]), s["status"],
             time.strftime("%Y-%m-%d %H:%M", time.gmtime(s["started"])) if s["started"] else "-",
             f"{s['duration_s']:.0f}s" if s["duration_s"] is not None else "-", str(s["findings"])]
            for s in out]
    echo(_table(["id", "task", "model", "rounds", "best val", "best test", "status",
                       "start (UTC)", "duration", "findings"], rows))


def cmd_show(ref: str, as_json: bool, round_k: int | None, code: bool) -> None:

    run = _open_run(ref)
    _check_log(run)
    if code:
        if round_k is None:
            raise StopError("--code needs --round K (0 is the seed improver)")
        echo(run.read_improver(round_k), nl=False)
        return
    s = summarize(run)
    if round_k is not None:
        rows = [r for r in s["round_table"] if r["round"] == round_k]
        if not rows and round_k != 0:
            raise StopError(f"run {run.id} has no finished round {round_k} "
                            f"(finished: {s['rounds_done']})")
        detail = rows[0] if rows else {"round": 0, "improver": "the seed improver"}
        echo(json.dumps(detail, indent=2) if as_json else _round_text(detail))
        return
    if as_json:
        echo(json.dumps({**s, "config": run.config()}, indent=2))
        return
    b = s["best"]
    if s.get("note"):
        echo(f"note: {s['note']}", err=True)
    echo(f"run {s['id']}  task {s['task']}  model {s['model']}  profile {s['profile']}  "
               f"status {s['status']}" + (f" ({s['error']})" if s.get("error") else ""))
    echo(f"rounds {s['rounds_done']}/{s['rounds']}  model calls {s['model_calls']}  tokens "
               f"{s['tokens']:,}  cost {format_cost(s['cost_usd'])}  findings {s['findings']}  best val "
               f"{_fmt(b['val'])} test {_fmt(b['test'])}")
    rows = [[str(r["round"]), _fmt(r["incumbent"]["val"]), _fmt(r["incumbent"]["test"]),
             _fmt(r["candidate"]["val"]), _fmt(r["candidate"]["test"]),
             "yes" if r["adopted"] else "no", str(r["model_calls"]), _n(r["tokens"], ","),
             _n(r["cost_usd"], ".4f"), _n(r["wall_s"], ".0f", "s"), str(r["findings"]), r["reason"]]
            for r in s["round_table"]]
    if rows:
        echo(_table(["round", "inc val", "inc test", "cand val", "cand test", "adopted",
                           "calls", "tokens", "cost", "wall", "findings", "why"], rows))


def _round_text(r: dict) -> str:
    if "adopted" not in r:
        return "round 0: the seed improver (`stop show RUN --round 0 --code`)"
    return "\n".join([
        f"round {r['round']}: {'adopted the candidate' if r['adopted'] else 'kept the incumbent'}",
        f"  why: {r['reason']}",
        f"  incumbent {r['incumbent_hash']}: val {_fmt(r['incumbent']['val'])} test "
        f"{_fmt(r['incumbent']['test'])} (runs {r['incumbent'].get('val_scores')})",
        f"  candidate {r['candidate_hash']}: val {_fmt(r['candidate']['val'])} test "
        f"{_fmt(r['candidate']['test'])} (runs {r['candidate'].get('val_scores')})",
        f"  model calls {r['model_calls']} (+{r['cached_calls']} served from the log), tokens "
        f"{_n(r['tokens'], ',')}, cost ${_n(r['cost_usd'], '.4f')}, wall {_n(r['wall_s'], '.1f', ' s')}, "
        f"findings {r['findings']}",
    ])



def _n(x: Any, spec: str, unit: str = "") -> str:
    """A logged number for a table; "-" for one that is missing or not a number."""
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{x:{spec}}{unit}"


def cmd_diff(ref: str, a: int, b: int, as_json: bool) -> None:
    run = _open_run(ref)
    _check_log(run)
    src_a, src_b = run.read_improver(a), run.read_improver(b)
    lines = list(difflib.unified_diff(src_a.splitlines(True), src_b.splitlines(True),
                                      f"{run.id}/round_{a:03d}.py", f"{run.id}/round_{b:03d}.py"))
    if as_json:
        echo(json.dumps({"run": run.id, "a": a, "b": b, "same": not lines,
                               "diff": "".join(lines)}, indent=2))
    elif not lines:
        echo(f"rounds {a} and {b} have the same improver", err=True)
    else:
        echo("".join(lines), nl=False)


def cmd_replay(ref: str, tolerance: float, keep: bool, quiet: bool) -> None:

    original = _open_run(ref)
    _check_log(original)
    if summarize(original)["status"] != "finished":
        raise StopError(f"run {original.id} is not finished; only a finished run can be replayed")
    cfg = run_config(original)
    model = ReplayModel(original.id, recorded_replies(original))
    with tempfile.TemporaryDirectory(prefix="stop-replay-") as tmp:
        store = RunStore() if keep else RunStore(tmp)
        replayed = store.create({**cfg.to_dict()}, label=f"replay-{original.id}")
        sandbox = open_sandbox(cfg.sandbox)
        diverged = None
        try:
            with Display(cfg, replayed.id, quiet=quiet) as display:
                execute(replayed, cfg, model=model, sandbox=sandbox, listener=display,
                        pin=original.events())
        except ModelError as e:
            diverged = e
        finally:
            sandbox.close()
        compared, same, diffs = compare_replay(original, replayed, tolerance)
    for d in diffs:
        echo(d)
    if diverged is not None:
        raise StopError(f"replay of {original.id} diverged: {diverged}; an earlier step came out "
                        f"differently (see the differences above), so the replay asked for a "
                        f"model call the run never made")
    if diffs:
        raise StopError(f"replay of {original.id}: {len(diffs)} scores or decisions differ "
                        f"(of {compared} scores; tolerance {tolerance:g})")
    echo(f"replay of {original.id}: {compared} scores reproduced ({same} identical, "
               f"{compared - same} within {tolerance:g}) and every adoption decision reproduced"
               + (f"; replay kept as {replayed.id}" if keep else ""))


@click.command("run", help=RUN_HELP)
@click.argument("task", required=False)
@click.option("--rounds", type=click.IntRange(min=0), help="Self-improvement rounds.")
@click.option("--model", help="litellm model string, 'embedded' (default), 'smollm2', "
                              "'scripted:FILE' or 'replay:RUN'.")
@click.option("--api-base", help="OpenAI-compatible server for --model.")
@click.option("--profile", type=click.Choice(list(PROFILES)), help="Budgets (default tiny).")
@click.option("--jobs", type=click.IntRange(min=1), help="Parallel improver runs and "
                                                          "solution scorings (default 2).")
@click.option("--seed", type=int, help="Sampling seed: part of every model-call key.")
@click.option("--sandbox", type=click.Choice(["docker", "process"]),
              help="Sandbox backend (default docker; process is no security boundary).")
@click.option("--margin", type=float, help="How much the candidate's meta-utility must beat "
                                           "the incumbent's by (default 0).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any other run setting, e.g. --set n_tests=3 (see the profile table).")
@click.option("--max-cost", type=float, metavar="USD",
              help="Stop the run once its model calls cost this much (needs a known price).")
@click.option("--max-tokens-total", type=click.IntRange(min=1), metavar="N",
              help="Stop the run once its model calls used this many tokens.")
@click.option("--resume", "resume", metavar="RUN", help="Continue a stopped or killed run "
                                                          "(a higher --max-cost or --max-tokens-total may be given).")
@click.option("--quiet", is_flag=True, help="No progress display.")
def run_cmd(**kw: Any) -> None:
    cmd_run(**kw)

@click.command("runs")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def runs_cmd(as_json: bool) -> None:
    """List runs: id, task, model, rounds, best meta-utility, status, start, duration."""
    cmd_runs(as_json)

@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--round", "round_k", type=click.IntRange(min=0), help="One round's details.")
@click.option("--code", is_flag=True, help="Print that round's improver source.")
def show_cmd(run: str, as_json: bool, round_k: int | None, code: bool) -> None:
    """Per-round table of RUN (an id, a unique prefix, or `latest`)."""
    cmd_show(run, as_json, round_k, code)

@click.command("diff")
@click.argument("run")
@click.argument("a", type=click.IntRange(min=0))
@click.argument("b", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff_cmd(run: str, a: int, b: int, as_json: bool) -> None:
    """Unified diff of the improvers after rounds A and B of RUN (0 is the seed)."""
    cmd_diff(run, a, b, as_json)

@click.command("replay")
@click.argument("run")
@click.option("--tolerance", type=click.FloatRange(min=0.0), default=REPLAY_TOLERANCE,
              show_default=True, help="Largest score difference counted as reproduced "
              "(solutions that draw unseeded random numbers score differently each run); "
              "0 demands identical scores.")
@click.option("--keep", is_flag=True, help="Keep the replay as a run under runs/.")
@click.option("--quiet", is_flag=True, help="No progress display.")
def replay_cmd(run: str, tolerance: float, keep: bool, quiet: bool) -> None:
    """Re-run a finished RUN offline from its recorded model calls; check every score."""
    cmd_replay(run, tolerance, keep, quiet)
