"""CLI commands: `stop tasks`, `stop tasks show NAME`, `stop score TASK FILE|seed`."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import click

from stop.cli.options import runtime_option
from stop.cli.safe import echo
from stop.core.meta import score_meta
from stop.errors import StopError
from stop.models import resolve_model
from stop.runs.recorders import NullRecorder
from stop.sandbox import open_sandbox
from stop.tasks.loader import load_task, scan_tasks
from stop.tasks.scoring import score_solution


@click.group("tasks", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tasks_group(ctx: click.Context, as_json: bool) -> None:
    """List the tasks, or show one with `stop tasks show NAME`."""
    if ctx.invoked_subcommand is not None:
        return

    tasks, problems = scan_tasks()
    for name, problem in problems:
        echo(f"warning: task folder {name} is skipped: {problem}", err=True)
    if as_json:
        echo(json.dumps([_brief(t) for t in tasks], indent=2))
        return
    if not tasks:
        echo("no tasks found", err=True)
        return
    width = max(len(t.name) for t in tasks)
    for t in tasks:
        echo(f"{t.name:<{width}}  {t.kind:<5}  {t.summary}")


def _brief(t: Any) -> dict[str, Any]:
    d = t.to_dict()
    d.pop("description")
    return d


@tasks_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(name: str, as_json: bool) -> None:
    """Print a task's description (what the model sees), its budgets and limits."""

    t = load_task(name)
    if as_json:
        echo(json.dumps(t.to_dict(), indent=2))
        return
    echo(f"{t.name} ({t.kind}): {t.summary}")
    echo(f"folder: {t.dir}")
    if t.kind == "solve":
        echo(f"entry: {t.entry}(...)   time limit: {t.per_call_s:g} s per call   "
                   f"memory: {t.memory_mb} MB")
        echo(f"instances: val {t.n_val} (seeds {t.seed_bases['val']}+i), "
                   f"test {t.n_test} (seeds {t.seed_bases['test']}+i)")
    echo(f"budgets per improver run: utility {t.utility_budget} calls, language model "
               f"{t.lm_budget} calls x {t.max_responses_per_call} responses")
    for k, v in t.settings.items():
        echo(f"setting {k}: {v}")
    echo("\n--- description shown to the model ---")
    echo(t.description)


@click.command("score")
@click.argument("task_name", metavar="TASK")
@click.argument("solution", metavar="FILE|seed")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--sandbox", "backend", type=click.Choice(["docker", "process"]), default="docker",
              show_default=True, help="process is NOT a security boundary.")
@click.option("--model", "model_spec", default=None,
              help="Meta tasks only: the language model the improver uses (default: embedded).")
@runtime_option
def score_cmd(task_name: str, solution: str, split: str, as_json: bool, backend: str,
              model_spec: str | None, runtime: str | None) -> None:
    """Score a solution file (or the task's seed) on a task's hidden instances.

    For a meta task, FILE is an improver and the score is its meta-utility."""

    task = load_task(task_name)
    if model_spec is not None and task.kind != "meta":
        raise StopError(f"--model applies to meta tasks only; {task.name} runs no language model")
    source = _read_solution(task, solution)
    recorder = NullRecorder()
    n = task.n_instances(split) if task.kind == "solve" else task.settings.get("n_tests", "?")
    echo(f"scoring {solution} on {task.name}/{split} ({n} instances, {backend} sandbox)...",
               err=True)
    sandbox = open_sandbox(backend, runtime=runtime)
    model = None
    try:
        with _status(f"running {task.name}/{split}"):
            if task.kind == "meta":
                model = resolve_model(model_spec)
                report = score_meta(task, source, split=split, sandbox=sandbox,
                                    recorder=recorder, model=model)
            else:
                report = score_solution(task, source, split=split, sandbox=sandbox,
                                        recorder=recorder)
    finally:
        if model is not None:
            model.close()
        sandbox.close()
    if as_json:
        echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    _print_report(report)


def _read_solution(task: Any, solution: str) -> str:
    if solution == "seed":
        return task.seed_source
    path = Path(solution)
    if not path.is_file():
        raise StopError(f"no solution file {solution!r}; give a Python file or `seed`")
    try:
        source = path.read_text(encoding="utf-8")
        ast.parse(source, filename=str(path))
    except UnicodeDecodeError:
        raise StopError(f"{solution}: not a UTF-8 text file") from None
    except SyntaxError as e:
        raise StopError(f"{solution}: syntax error at line {e.lineno}: {e.msg}") from None
    return source


def _status(message: str) -> Any:
    """A spinner on stderr when it is a terminal; nothing otherwise."""
    import contextlib
    import sys

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


def _print_report(report: Any) -> None:
    counts = report.counts()
    machine = report.machine
    echo(f"task      {report.task}")
    echo(f"split     {report.split} ({len(report.outcomes)} instances)")
    echo(f"score     {report.score:.4f}")
    echo("outcomes  " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    echo(f"time      {report.wall_s:.2f} s ({report.backend} sandbox, exec status "
               f"{report.exec_status}; {machine.get('cpu_model')} x {machine.get('cpu_count')}, "
               f"{machine.get('platform')})")
    if not report.findings:
        echo("findings  none")
        return
    echo(f"findings  {len(report.findings)}")
    for f in report.findings:
        where = f" line {f.line}" if f.line else ""
        echo(f"  [{f.severity}] {f.rule} ({f.layer}, {f.action}){where}: {f.attempted}")
