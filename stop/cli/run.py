"""CLI commands: run (start or resume self-improvement), runs, show, diff, replay."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import click

from stop.cli.display import Display
from stop.cli.executor import executor_options
from stop.cli.options import runtime_option
from stop.cli.runs import open_run
from stop.cli.safe import echo
from stop.cli.sweep import run_many
from stop.cluster.executor import open_executor
from stop.core.config import PROFILES, ConfigError, RunConfig, profile_table
from stop.core.loop import execute, new_run, run_config
from stop.errors import StopError
from stop.models import resolve_model
from stop.models.caps import refuse_unpriced
from stop.paths import tasks_dir
from stop.runs.summary import (
    finished_rounds,
    summarize,
    summary_is_current,
    write_summary,
)
from stop.sandbox.runtimes import choose
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


def _resolve_task(name: str | None) -> tuple[str, str]:
    """(base task, seed improver task) for the TASK argument."""

    task = load_task(name or "parity_noise")
    # A task folder of the user's is kept by its absolute path, so resume finds it again.
    ref = task.name if (tasks_dir() / task.name).resolve() == task.dir else str(task.dir)
    if task.kind == "meta":
        base = str(task.settings.get("base_task", "parity_noise"))
        if load_task(base).kind != "solve":
            raise TaskError(f"task {task.name}: base_task {base} is not a solve task")
        return base, ref
    return ref, "meta_optimization"


def _run_rounds(get_run: Any, cfg: RunConfig, quiet: bool, address: str | None = None) -> Any:
    """Open the model and the sandbox, then the run (so a missing engine leaves no empty run
    behind), and execute its rounds. Ctrl-C or SIGTERM: log the interruption and exit 130."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    model = resolve_model(cfg.model, api_base=cfg.api_base, timeout_s=cfg.model_timeout_s)
    sandbox = open_executor(cfg.sandbox, executor=cfg.executor, address=address,
                            runtime=cfg.sandbox_runtime)
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
            max_tokens_total: int | None = None, runtime: str | None = None,
            executor: str | None = None, ray_address: str | None = None, runs: int = 1) -> None:

    if resume and runs > 1:
        raise StopError("--runs starts new runs; resume each one with --resume RUN")
    if resume:
        given = [n for n, v in (("TASK", task), ("--model", model), ("--api-base", api_base),
                                ("--profile", profile), ("--seed", seed), ("--margin", margin),
                                ("--sandbox", sandbox), ("--runtime", runtime),
                                ("--set", settings or None))
                 if v is not None]
        if given:
            raise StopError(f"--resume continues a run with its own settings; drop {', '.join(given)} "
                            f"(only --rounds, --jobs, --max-cost, --max-tokens-total, --executor and --ray-address may change)")
        run = open_run(resume)
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
        if executor is not None:  # where the sandboxes run does not change any result
            cfg.executor = executor
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
                 "max_tokens_total": max_tokens_total, "executor": executor}
        overrides = {"sandbox_runtime": runtime or choose(), **parse_settings(settings),
                     **{k: v for k, v in named.items() if v is not None}}
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

    if runs > 1:
        for r in run_many(cfg, runs, quiet=quiet, address=ray_address):
            echo(str(r.dir))
        return
    run = _run_rounds(get_run, cfg, quiet, address=ray_address)
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
@runtime_option
@executor_options
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent runs started at once, with seeds --seed, --seed+1, ...; each "
                   "has its own run folder.")
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
