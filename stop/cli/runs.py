"""CLI commands that read runs: runs (the listing), show, diff, replay."""

from __future__ import annotations

import difflib
import json
import math
import tempfile
import time
from typing import Any

import click

from stop.cli.display import Display
from stop.cli.safe import echo
from stop.core.loop import execute, run_config
from stop.errors import StopError
from stop.models.base import ModelError, format_cost
from stop.models.replay import ReplayModel
from stop.runs.replay import compare_replay, recorded_replies
from stop.runs.store import RunStore
from stop.runs.summary import (
    listed,
    summarize,
)
from stop.sandbox import open_sandbox

# Scoring is repeatable (the harness seeds random and NumPy per call, replies come from the log),
# so a replay must reproduce every score exactly; --tolerance exists for time-limited tasks on a
# slower machine.
REPLAY_TOLERANCE = 0.0


def open_run(ref: str) -> Any:

    return RunStore().open(ref)


def _check_log(run: Any) -> None:
    """A torn last line means the run's writer died mid-write: say so instead of guessing."""
    if run.log.torn_tail():
        raise StopError(f"run {run.id}: events.jsonl ends with a torn line (its writer was killed "
                        f"mid-write); `stop run --resume {run.id}` cuts it and continues the run, "
                        f"nothing else is lost")


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

    run = open_run(ref)
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
             _cost(r["cost_usd"]), _n(r["wall_s"], ".0f", "s"), str(r["findings"]), r["reason"]]
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
        f"{_n(r['tokens'], ',')}, cost {_cost(r['cost_usd'])}, wall {_n(r['wall_s'], '.1f', ' s')}, "
        f"findings {r['findings']}",
    ])


def _n(x: Any, spec: str, unit: str = "") -> str:
    """A logged number for a table; "-" for one that is missing or not a number."""
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{x:{spec}}{unit}"


def _cost(x: Any) -> str:
    return format_cost(x) if x is None or _n(x, "f") != "-" else "-"


def cmd_diff(ref: str, a: int, b: int, as_json: bool) -> None:
    run = open_run(ref)
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

    original = open_run(ref)
    _check_log(original)
    if summarize(original)["status"] != "finished":
        raise StopError(f"run {original.id} is not finished; only a finished run can be replayed")
    cfg = run_config(original)
    model = ReplayModel(original.id, recorded_replies(original))
    with tempfile.TemporaryDirectory(prefix="stop-replay-") as tmp:
        store = RunStore() if keep else RunStore(tmp)
        replayed = store.create({**cfg.to_dict()}, label=f"replay-{original.id}")
        sandbox = open_sandbox(cfg.sandbox, runtime=cfg.sandbox_runtime)
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
