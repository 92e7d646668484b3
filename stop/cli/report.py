"""CLI commands: transfer, report, compare."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

import click

from stop.cli.executor import cluster_sandbox, executor_options
from stop.cli.options import runtime_option
from stop.cli.safe import echo
from stop.errors import StopError
from stop.experiments.improve_summary import summarize as summarize_improve
from stop.experiments.transfer import TRANSFER_TASKS, format_table, run_transfer
from stop.reports.improve import build_improve_report
from stop.reports.report import build_report, compare_runs
from stop.runs.store import RunStore


def _split_tasks(values: tuple[str, ...]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--tasks", "tasks", multiple=True,
              help="Tasks to evaluate (repeatable or comma-separated). Default: the five "
                   "transfer tasks of the STOP paper; add parity_noise for LPN.")
@click.option("--trials", type=int, default=5, show_default=True,
              help="Independent trials per task and arm, each with fresh budgets.")
@click.option("--improver", "improver_round", type=int,
              help="Round of the improver to evaluate (default: the run's final improver).")
@click.option("--jobs", type=int, default=1, show_default=True, help="Trials run at once.")
@click.option("--model", "model_spec", help="Model to use instead of the run's own.")
@click.option("--improver-file", "improver_file", type=click.Path(path_type=Path),
              help="An improver from elsewhere (defines improve_algorithm) in place of the run's.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@runtime_option
@executor_options
def transfer(run_ref: str, tasks: tuple[str, ...], trials: int, improver_round: int | None,
             jobs: int, model_spec: str | None, improver_file: Path | None, as_json: bool,
             runtime: str | None, executor: str | None = None,
             ray_address: str | None = None) -> None:
    """Score a run's improver on other tasks: the STOP paper's Table 1.

    For each task: the test score of its seed solution, of the seed improver applied to it, and
    of the run's improver applied to it, each the mean of --trials runs with a 95% Student t
    interval, beside the published numbers. Finished trials are kept in the run's log; running
    the command again resumes and redoes nothing finished.
    """

    source = _improver_file(improver_file, improver_round) if improver_file else None
    run = RunStore().open(run_ref)
    chosen = _split_tasks(tasks) or list(TRANSFER_TASKS)

    def progress(event: dict[str, Any]) -> None:
        extra = f" ({event['error']})" if event.get("error") else ""
        echo(f"  {event['task']:<30} {event['arm']:<14} trial {event['trial']}: "
                   f"{100 * event['score']:.1f}%{extra}", err=True)

    def start(pending: int, total: int, label: str) -> None:
        echo(f"transfer of run {run.id} ({label}): {total - pending} of {total} trials "
                   f"already done, {pending} to run", err=True)

    sandbox = cluster_sandbox(executor, ray_address, runtime=runtime)
    try:
        table = run_transfer(run, tasks=chosen, trials=trials, improver_round=improver_round,
                             jobs=jobs, model_spec=model_spec, on_trial=progress,
                             on_start=start, runtime=runtime, improver_source=source,
                             improver_name=improver_file.name if improver_file else None,
                             sandbox=sandbox)
    finally:
        if sandbox is not None:
            sandbox.close()
    echo(json.dumps(_clean(table), indent=2) if as_json else format_table(table))


def _improver_file(path: Path, improver_round: int | None) -> str:
    """The improver source in `path`, checked: readable text, valid Python, improve_algorithm."""
    if improver_round is not None:
        raise StopError("--improver-file and --improver both choose the improver; give one")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StopError(f"cannot read the improver file {path} ({getattr(e, 'strerror', None) or e})") from None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:
        raise StopError(f"the improver file {path} is not valid Python ({e})") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "improve_algorithm" for n in tree.body):
        raise StopError(f"the improver file {path} defines no improve_algorithm(initial_solution, "
                        f"utility, language_model)")
    return source


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the report (default: runs/<id>/report/).")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def report(run_ref: str, out_dir: Path | None, as_json: bool) -> None:
    """Write a run's report: an HTML page with figures (meta-utility, model use, findings,
    transfer) and tables (rounds, decisions, improver diffs, audit findings)."""

    run = RunStore().open(run_ref)
    out = out_dir or run.dir / "report"
    try:
        if run.config().get("experiment") == "improve":  # `stop experiment improve`'s own page
            page = build_improve_report(run.id, summarize_improve(run), out)[0]
        else:
            page = build_report(run, out)
    except OSError as e:
        raise StopError(f"cannot write the report to {out}: {e.strerror}") from None
    figures = sorted(str(p) for p in page.parent.glob("*.png"))
    if as_json:
        echo(json.dumps({"run": run.id, "report": str(page), "figures": figures}, indent=2))
    else:
        echo(str(page))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_refs", metavar="RUN RUN...", nargs=-1, required=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("compare.png"), show_default=True, help="PNG file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-run summary as JSON.")
def compare(run_refs: tuple[str, ...], out_file: Path, as_json: bool) -> None:
    """Draw the meta-utility curves of several runs on one figure and summarise each run."""

    store = RunStore()
    runs = [store.open(r) for r in run_refs]
    if len({r.id for r in runs}) != len(runs):
        raise click.UsageError("the same run is given twice")
    if out_file.suffix.lower() != ".png":
        raise click.UsageError("--out must name a .png file")
    try:
        path, summary = compare_runs(runs, out_file)
    except OSError as e:
        raise StopError(f"cannot write {out_file}: {e.strerror}") from None
    if as_json:
        echo(json.dumps(_clean({"figure": str(path), "runs": summary}), indent=2))
        return
    echo(f"{'run':<34} {'model':<24} {'rounds':>6} {'adopted':>7}  {'first val':>10}  "
               f"{'final val':>10}  {'final test':>10}")
    for s in summary:
        first = _m((s["first"] or {}).get("val"))
        final = s["final"] or {}
        echo(f"{s['run']:<34} {str(s['model'])[:24]:<24} {s['rounds']:>6} "
                   f"{s['adopted']:>7}  {first:>10}  {_m(final.get('val')):>10}  "
                   f"{_m(final.get('test')):>10}")
    echo(str(path))


def _m(point: dict[str, Any] | None) -> str:
    return "-" if not point else f"{point['mean']:.3f}"


def _clean(x: Any) -> Any:
    """NaN (an interval from one value) as null, so the JSON is valid."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x
