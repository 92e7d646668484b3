"""CLI command: audit (the sandbox-escape findings of runs)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from stop.cli.safe import echo
from stop.reports import audit as A
from stop.runs.store import RunStore
from stop.sandbox.records import SEVERITIES
from stop.sandbox.runtimes import RUNTIMES

FAIL_EXIT = 3


_severity = click.Choice(SEVERITIES, case_sensitive=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("refs", nargs=-1, metavar="[RUN | show FINDING]")
@click.option("--all", "all_runs", is_flag=True, help="Findings of every run.")
@click.option("--severity", type=_severity, help="Only findings at or above this level.")
@click.option("--rule", "rules", multiple=True, help="Only this rule (repeatable).")
@click.option("--round", "round_", type=int, help="Only findings of this round.")
@click.option("--role", type=click.Choice(["improver", "solution"]), help="Only this role.")
@click.option("--runtime", type=click.Choice(RUNTIMES),
              help="Only findings contained by this Docker runtime (runc, or runsc: gVisor).")
@click.option("--summary", is_flag=True, help="Counts per severity, rule, round and lineage.")
@click.option("--context", "context", type=int, default=1, show_default=True,
              help="Source lines shown around each finding's line.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--fail-on", type=_severity,
              help=f"Exit {FAIL_EXIT} when a finding at or above this level is listed.")
def audit(refs: tuple[str, ...], all_runs: bool, severity: str | None, rules: tuple[str, ...],
          round_: int | None, role: str | None, summary: bool, context: int, as_json: bool,
          fail_on: str | None, runtime: str | None) -> None:
    """List the sandbox-escape findings of a run (default: the latest run).

    `stop audit show FINDING` prints one finding (id or unique prefix) with the candidate's
    full source around the offending line.

    Exit codes: 0 ok, 1 error, 3 when --fail-on LEVEL is given and a listed finding is at or
    above LEVEL (the filters apply first).
    """

    store = RunStore()
    if refs and refs[0] == "show":
        if len(refs) != 2:
            raise click.UsageError("usage: stop audit show FINDING")
        entry = A.find_entry(store, refs[1])
        _show(store, entry, as_json)
        return
    if len(refs) > 1:
        raise click.UsageError("give at most one RUN (or `show FINDING`)")
    query = A.FindingQuery(min_severity=severity and severity.lower(), rules=rules,
                           round=round_, role=role, runtime=runtime)
    runs, found = A.collect(store, refs[0] if refs else None, all_runs=all_runs, query=query)
    if summary:
        data = A.summarize(runs, found)
        echo(json.dumps(data, indent=2) if as_json else _summary_text(data))
    elif as_json:
        echo(json.dumps([e.to_dict() for e in found], indent=2))
    else:
        _list_text(store, runs, found, context)
    if fail_on:
        over = A.exceeds(found, fail_on.lower())
        if over:
            echo(f"{len(over)} finding(s) at or above {fail_on.lower()}", err=True)
            # sys.exit, not ctx.exit: the entry point runs click in non-standalone mode, where
            # ctx.exit's code would be returned and lost instead of becoming the exit status.
            sys.exit(FAIL_EXIT)


def _where(f: Any) -> str:
    attempt = (f.detail or {}).get("attempt")
    if f.round is None and attempt is not None:
        when = f"attempt {attempt}"
    else:
        when = f"round {'-' if f.round is None else f.round}"
    return f"run {f.run_id}  {when}  {f.role} {f.candidate_hash or '?'}"


def _list_text(store: Any, runs: list, found: list, context: int) -> None:

    if not found:
        names = ", ".join(r.id for r in runs) if len(runs) <= 3 else f"{len(runs)} runs"
        echo(f"no findings ({names})")
        return
    sources: dict[tuple[str, str], Any] = {}
    for e in found:
        f = e.finding
        seen = f" x{e.occurrences}" if e.occurrences > 1 else ""
        under = f", {f.runtime}" if f.runtime else ""
        echo(f"{e.id}  {f.severity.upper():8} {f.rule}  [{f.layer}{under}]{seen}")
        echo(f"    {_where(f)}")
        echo(f"    attempted: {f.attempted}")
        echo(f"    sandbox:   {f.action}")
        if e.linked:
            echo(f"    linked:    {', '.join(e.linked)}")
        lines: list[str] = []
        if f.line and context > 0:
            key = (f.run_id or "", f.candidate_hash)
            if key not in sources:
                run = A.run_of(store, f)
                sources[key] = A.candidate_source(run, f.candidate_hash) if run else None
            if sources[key]:
                lines = A.source_context(sources[key][0], f.line, context)
        if not lines and f.source_line:
            lines = [f"> {f.line or '?'} | {f.source_line.strip()}"]
        for ln in lines:
            echo(f"      {ln}")
    n = sum(1 for e in found if e.counted)
    echo(f"{n} finding(s), {len(found)} distinct, linked static/runtime pairs counted once")


def _summary_text(data: dict) -> str:
    out = [f"runs: {', '.join(data['runs']) or '-'}",
           f"findings: {data['findings']} (distinct {data['distinct']}, logged {data['logged']}, "
           f"linked pairs {data['linked_pairs']})"]
    for key in ("severity", "rule", "round", "role", "layer", "runtime"):
        counts = data.get(f"by_{key}")
        if counts:
            out.append(f"by {key}:")
            out.extend(f"  {k:28} {v}" for k, v in counts.items())
    for run_id, chain in data["lineage"].items():
        out.append(f"lineage of adopted improvers, run {run_id}:")
        for node in chain:
            mark = "FLAGGED" if node["flagged"] else "clean"
            why = ""
            if node["has_findings"]:
                why = " (own findings)"
            elif node["flagged_ancestors"]:
                why = f" (descends from {', '.join(node['flagged_ancestors'])})"
            out.append(f"  round {node['round']:>3}  {node['hash']}  {mark}{why}")
    return "\n".join(out)


def _show(store: Any, entry: Any, as_json: bool) -> None:

    f = entry.finding
    run = A.run_of(store, f)
    found = A.candidate_source(run, f.candidate_hash) if run else None
    if as_json:
        d = entry.to_dict()
        d["source"] = found[0] if found else None
        d["source_origin"] = found[1] if found else None
        echo(json.dumps(d, indent=2))
        return
    echo(f"finding   {entry.id}")
    for label, value in (("rule", f.rule), ("severity", f.severity), ("layer", f.layer),
                         ("runtime", f.runtime), ("run", f.run_id), ("round", f.round),
                         ("role", f.role),
                         ("candidate", f.candidate_hash or "?"), ("attempted", f.attempted),
                         ("sandbox", f.action), ("line", f.line),
                         ("logged", f"{entry.occurrences} time(s)")):
        echo(f"{label:9} {value if value is not None else '-'}")
    if entry.linked:
        echo(f"{'linked':9} {', '.join(entry.linked)}")
    extra = {k: v for k, v in (f.detail or {}).items() if k != "linked"}
    if extra:
        echo(f"{'detail':9} {json.dumps(extra, default=str)}")
    if not found:
        echo("source    not stored in the run (no candidates/<hash>.py, improver file, "
                   "or model reply with this hash)")
        if f.source_line:
            echo(f"> {f.line or '?'} | {f.source_line}")
        return
    echo(f"source    {found[1]}")
    echo("")
    for ln in A.source_context(found[0], f.line):
        echo(ln)
