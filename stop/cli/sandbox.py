"""CLI commands: sandbox (build, status, check) and exec (run one candidate file by itself)."""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from stop.cli.options import runtime_option
from stop.cli.safe import echo, visible
from stop.errors import StopError
from stop.sandbox import Sandbox, open_sandbox
from stop.sandbox.canaries import CanaryOutcome, load_canaries, run_canary
from stop.sandbox.image import build_base, build_image, image_status, prune_images
from stop.sandbox.records import ExecLimits, ExecResult
from stop.sandbox.standalone import (
    SEED_SOLUTION,
    CapturingSandbox,
    CountingServices,
    small_task,
)
from stop.tasks.scoring import score_solution

# The suite is really hostile (it writes to /etc, kills processes, fork-bombs): containers only.
SUITE_BACKEND = "docker"


def _echo_json(data: object) -> None:
    echo(json.dumps(data, indent=2, default=str))


@click.group("sandbox")
def sandbox_group() -> None:
    """Build the sandbox image and check it against the adversarial suite."""


@sandbox_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the current tag exists.")
@click.option("--base", is_flag=True, help="Also re-bootstrap the Debian base image.")
@click.option("--prune", is_flag=True, help="Remove images of older sandbox/ contents.")
def build_cmd(force: bool, base: bool, prune: bool) -> None:
    """Build the image (tagged by a hash of sandbox/) and print its tag."""
    if base:
        build_base(force=True)
    echo(build_image(force=force or base))
    if prune:
        for tag in prune_images():
            echo(f"removed {tag}", err=True)


@sandbox_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(as_json: bool) -> None:
    """Whether the image for the current sandbox/ contents exists."""
    st = image_status()
    if as_json:
        _echo_json(st.to_dict())
    else:
        echo(f"image {st.tag}: {'present' if st.exists else 'missing (stop sandbox build)'}")
        echo(f"base  {st.base}: {'present' if st.base_exists else 'missing'}")


@sandbox_group.command("check")
@click.argument("cases", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@runtime_option
def check_cmd(cases: tuple[str, ...], as_json: bool, runtime: str | None) -> None:
    """Run the adversarial suite (or the CASES named, by row or name) in the Docker sandbox.

    Exits 1 when any case fails: wrong outcome, missing finding, a score, or an escape.
    The suite is really hostile (it writes to /etc, kills processes, fork-bombs), so it only
    ever runs in containers, never with the process backend.
    """
    canaries = load_canaries(list(cases) or None)
    if not canaries:
        raise StopError(f"no canary matches {' '.join(cases)}; see stop/sandbox/canaries/")
    sb = open_sandbox(SUITE_BACKEND, runtime=runtime)
    outcomes = []
    t0 = time.monotonic()
    try:
        for c in canaries:
            if not as_json:
                echo(f"  running {c.name} ...", err=True)
            outcomes.append(run_canary(sb, c))
        sane = _sanity(sb)
    finally:
        sb.close()
    failed = [o for o in outcomes if not o.passed]
    if as_json:
        _echo_json({"backend": SUITE_BACKEND, "runtime": getattr(sb, "runtime", None),
                    "passed": not failed and sane is None,
                    "wall_s": round(time.monotonic() - t0, 2), "sanity": sane or "ok",
                    "cases": [o.to_dict() for o in outcomes]})
    else:
        _table(outcomes)
        echo(f"{len(outcomes) - len(failed)}/{len(outcomes)} cases passed under "
             f"{getattr(sb, 'runtime', SUITE_BACKEND)} in "
             f"{time.monotonic() - t0:.1f}s; a normal candidate afterwards: {sane or 'ok'}")
    if failed or sane:
        sys.exit(1)


@click.command("exec")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--role", type=click.Choice(["solution", "improver"]), default=None,
              help="What the file is (default: guessed from the function it defines).")
@click.option("--task", "task_name", default="parity_noise", show_default=True,
              help="Task whose instances a solution is fed.")
@click.option("--sandbox", "backend", type=click.Choice(["docker", "process"]),
              default="docker", show_default=True)
@click.option("--wall", type=float, default=30.0, show_default=True,
              help="Wall-clock limit in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@runtime_option
def exec_cmd(file: Path, role: str | None, task_name: str, backend: str, wall: float,
             as_json: bool, runtime: str | None) -> None:
    """Run one candidate FILE in the sandbox by itself; print the outcome and findings."""
    out = _exec_file(file, role=role, task_name=task_name, backend=backend, wall_s=wall,
                     runtime=runtime)
    if as_json:
        _echo_json(out)
        return
    under = f" under {out['runtime']}" if out.get("runtime") else ""
    echo(f"{out['role']} {file.name}: {out['status']}{under} in {out['wall_s']:.2f}s "
         f"(exit {out['exit_code']}{', ' + out['signal'] if out['signal'] else ''})")
    for line in out.get("summary", []):
        echo(f"  {line}")
    for f in out["findings"]:
        where = f"line {f['line']}: {f['source_line']}" if f.get("line") else f["layer"]
        echo(f"  [{f['severity']}] {f['rule']} ({f['layer']}, {f['action']}): "
             f"{f['attempted']}  <{where}>")
    if out["stdout"]:
        echo("  stdout: " + out["stdout"][:500].replace("\n", "\n          "))
    if out["stderr"]:
        echo("  stderr: " + out["stderr"][-500:].replace("\n", "\n          "))


def register(cli: click.Group) -> None:
    """Add this module's commands to the `stop` group."""
    cli.add_command(sandbox_group)
    cli.add_command(exec_cmd)


def _sanity(sb: Sandbox) -> str | None:
    """After the suite, an honest candidate must still run normally."""
    try:
        rep = score_solution(small_task(2, per_call_s=1.0), SEED_SOLUTION, split="val",
                             sandbox=sb)
    except Exception as e:
        return f"failed: {type(e).__name__}: {e}"
    return None if rep.exec_status == "ok" else f"outcome {rep.exec_status}"


def _guess_role(source: str) -> str:
    try:
        names = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        return "solution"
    return "improver" if "improve_algorithm" in names else "solution"


def _exec_file(file: Path, *, role: str | None, task_name: str, backend: str,
               wall_s: float, runtime: str | None = None) -> dict[str, Any]:
    """Run a file alone: a solution on a few instances of the task, an improver with budgets."""
    try:
        source = file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise StopError(f"cannot read {file}: {e}") from None
    role = role or _guess_role(source)
    sb = open_sandbox(backend, runtime=runtime)
    try:
        r, summary = (_exec_solution(sb, source, task_name) if role == "solution"
                      else _exec_improver(sb, source, wall_s))
    finally:
        sb.close()
    return {"file": str(file), "role": role, "backend": backend, **r.summary(),
            "wall_s": r.wall_s, "stdout": r.stdout, "stderr": r.stderr, "summary": summary,
            "findings": [f.to_dict() for f in r.findings]}


def _exec_solution(sb: Sandbox, source: str, task_name: str) -> tuple[ExecResult, list[str]]:
    task = small_task(3, name=task_name)
    cap = CapturingSandbox(sb)
    rep = score_solution(task, source, split="val", sandbox=cap)
    r = cap.results[-1]
    r.findings = list(rep.findings)
    summary = [f"instance {o.index}: {o.status}, score {o.score:.3f}"
               + (f": {o.detail[:120]}" if o.detail else "") for o in rep.outcomes]
    summary.append(f"score {rep.score:.3f} on {len(rep.outcomes)} {task.name} "
                   "validation instances (scored on the host)")
    return r, summary


def _exec_improver(sb: Sandbox, source: str, wall_s: float) -> tuple[ExecResult, list[str]]:
    services = CountingServices(sb)
    job = services.job(source, description="learning parity with noise",
                       use_sandbox_param=False)
    r = sb.execute(job, limits=ExecLimits(wall_s=wall_s), role="improver", services=services)
    summary = [services.summary()]
    if isinstance(r.value, dict):
        summary.append(f"returned: {str(r.value.get('returned'))[:200]!r}"
                       + (f"; error: {r.value['error']}" if r.value.get("error") else ""))
    return r, summary


def _table(outcomes: list[CanaryOutcome]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(title="sandbox adversarial suite")
    for col in ("#", "case", "outcome", "findings", "result"):
        t.add_column(col)
    for o in outcomes:
        # A problem can quote the candidate's output: shown as text, never read as markup.
        verdict = Text("pass", style="green") if o.passed else Text.assemble(
            ("FAIL", "red"), " " + visible("; ".join(o.problems)))
        t.add_row(str(o.canary.row), o.canary.summary, o.status, ", ".join(o.rules), verdict)
    Console(soft_wrap=False).print(t)
