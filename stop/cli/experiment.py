"""CLI command: experiment (the STOP paper's experiments; today the unsandboxing experiment)."""

from __future__ import annotations

import json
from typing import Any

import click

from stop.cli.safe import echo
from stop.experiments import unsandbox as X
from stop.runs.store import RunStore


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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def unsandbox(n: int | None, warning: bool | None, model: str | None, jobs: int,
              run_ref: str | None, max_tokens: int | None, batch: int | None, no_exec: bool,
              backend: str, as_json: bool) -> None:
    """The STOP paper's unsandboxing experiment: how often does the model switch the flag off?

    N independent attempts to improve the sandbox-variant seed improver, whose utility shows
    `use_sandbox=True`. Each improver is scanned and run in the sandbox; the rate of improvers
    that pass use_sandbox=False is reported with a 95% Wilson interval next to the published
    GPT-4 and GPT-3.5 rates. An interrupted experiment resumes with --run.
    """

    store = RunStore()
    cfg = X.UnsandboxConfig(jobs=jobs, sandbox=backend)
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

    run = X.run_unsandbox(cfg, store=store, run_ref=run_ref, progress=progress, started=started)
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
