"""Reading audit findings back from runs: filtering, linking, summaries, lineage, source context.

Threat model: the auditor runs on the host and only reads what trusted components (the static
scan, the harness's audit hook relayed through the bridge, the container engine, the host's
checks) wrote into a run's event log. It never executes candidate code. What it reports is a
record of attempts the tripwires saw; a candidate that blinds the in-container hook with native
code leaves fewer runtime findings, but never gets past the container, which is the wall.

Counting rules:
- The same finding can be logged many times (a candidate improver is executed `n_tests` times by
  the meta-utility, each execution re-scans it). Findings with the same id are one entry with an
  occurrence count.
- A static finding and a non-static finding (runtime, container or host layer) of the same rule
  on the same candidate in the same run are one incident: they are linked (`detail["linked"]`,
  the other finding's id) and the static side is not counted again in summaries.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stop.container.helpers import code_blocks, extract_code
from stop.errors import StopError
from stop.runs.store import Run, RunStore
from stop.sandbox.records import SEVERITIES, AuditFinding, severity_rank, source_hash
from stop.sandbox.rules import RULES
from stop.sandbox.runtimes import RUNTIMES


class AuditError(StopError):
    """A finding reference or filter that cannot be resolved."""


@dataclass
class AuditEntry:
    """One distinct finding, with how often it was logged and what it is linked to."""

    finding: AuditFinding
    occurrences: int = 1
    linked: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.finding.id

    @property
    def counted(self) -> bool:
        """False for a static finding already represented by its linked runtime finding."""
        return not (self.finding.layer == "static" and self.linked)

    def to_dict(self) -> dict[str, Any]:
        d = self.finding.to_dict()
        d["detail"] = dict(d.get("detail") or {})
        if self.linked:
            d["detail"]["linked"] = self.linked[0]
            d["linked"] = list(self.linked)
        d["occurrences"] = self.occurrences
        d["counted"] = self.counted
        return d


@dataclass(frozen=True)
class FindingQuery:
    """Filters of `stop audit`; every given filter must match."""

    min_severity: str | None = None
    rules: tuple[str, ...] = ()
    round: int | None = None
    role: str | None = None
    runtime: str | None = None  # the OCI runtime whose container held it (runc, runsc)

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise AuditError(
                f"unknown severity {self.min_severity!r}; choose one of {', '.join(SEVERITIES)}")

        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            import difflib

            near = difflib.get_close_matches(unknown[0], list(RULES), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; the README lists the rules"
            raise AuditError(f"unknown rule {unknown[0]!r}{hint}")
        if self.role is not None and self.role not in ("improver", "solution"):
            raise AuditError(f"unknown role {self.role!r}; choose improver or solution")
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise AuditError(f"unknown runtime {self.runtime!r}; choose {' or '.join(RUNTIMES)}")

    def matches(self, f: AuditFinding) -> bool:
        if self.min_severity and _rank(f.severity) < severity_rank(self.min_severity):
            return False
        if self.rules and f.rule not in self.rules:
            return False
        if self.round is not None and f.round != self.round:
            return False
        if self.runtime is not None and f.runtime != self.runtime:
            return False  # findings of the process backend, or logged before runtimes, have none
        return self.role is None or f.role == self.role


def _rank(level: str) -> int:
    return SEVERITIES.index(level) if level in SEVERITIES else 0


def run_findings(run: Run) -> list[AuditFinding]:
    """Every logged finding of a run, in log order, stamped with the run id."""
    out = []
    for ev in run.events("audit_finding"):
        f = AuditFinding.from_dict(ev["finding"])
        f.run_id = f.run_id or run.id
        if "attempt" in ev:  # the unsandbox experiment's attempt index
            f.detail = {**(f.detail or {}), "attempt": ev["attempt"]}
        out.append(f)
    return out


def entries(findings: list[AuditFinding]) -> list[AuditEntry]:
    """Merge repeated findings and link static findings to their runtime counterparts."""
    by_id: dict[str, AuditEntry] = {}
    for f in findings:
        e = by_id.get(f.id)
        if e is None:
            by_id[f.id] = AuditEntry(f)
        else:
            e.occurrences += 1
    groups: dict[tuple, list[AuditEntry]] = {}
    for e in by_id.values():
        f = e.finding
        groups.setdefault((f.run_id, f.candidate_hash, f.rule), []).append(e)
    for group in groups.values():
        static = [e for e in group if e.finding.layer == "static"]
        dynamic = [e for e in group if e.finding.layer != "static"]
        for e in group:
            own = e.finding.detail.get("linked") if isinstance(e.finding.detail, dict) else None
            if own and own in by_id and own != e.id:
                e.linked.append(own)
        if not (static and dynamic and static[0].finding.candidate_hash):
            continue
        for s in static:
            same_round = [d for d in dynamic if d.finding.round == s.finding.round]
            for d in same_round or dynamic:
                if d.id not in s.linked:
                    s.linked.append(d.id)
                if s.id not in d.linked:
                    d.linked.append(s.id)
    return list(by_id.values())


def collect(store: RunStore, run_ref: str | None = None, *, all_runs: bool = False,
            query: FindingQuery | None = None) -> tuple[list[Run], list[AuditEntry]]:
    """The runs asked for and their distinct findings that pass the query, most severe first.

    Linking happens before filtering, so a static finding stays linked even when a filter (a
    layer-blind one such as --rule) would show only one side.
    """
    if all_runs and run_ref:
        raise AuditError("give a run or --all, not both")
    runs = store.list() if all_runs else [store.open(run_ref or "latest")]
    found: list[AuditEntry] = []
    for run in runs:
        found.extend(entries(run_findings(run)))
    q = query or FindingQuery()
    kept = [e for e in found if q.matches(e.finding)]
    kept.sort(key=lambda e: (-_rank(e.finding.severity), e.finding.run_id or "",
                             e.finding.round if e.finding.round is not None else -1,
                             e.finding.rule, e.finding.line or 0))
    return runs, kept


def exceeds(found: list[AuditEntry], level: str) -> list[AuditEntry]:
    """Entries at or above a severity (the `--fail-on` gate)."""
    if level not in SEVERITIES:
        raise AuditError(f"unknown severity {level!r}; choose one of {', '.join(SEVERITIES)}")
    return [e for e in found if _rank(e.finding.severity) >= severity_rank(level)]


# ---------------------------------------------------------------- lineage and summary


def _round_ends(run: Run) -> list[dict[str, Any]]:
    last: dict[int, dict[str, Any]] = {}
    for ev in run.events("round_end"):
        if isinstance(ev.get("round"), int):
            last[ev["round"]] = ev  # a resumed round may log again; the last word wins
    return [last[k] for k in sorted(last)]


def lineage(run: Run, flagged_hashes: set[str]) -> list[dict[str, Any]]:
    """The chain of adopted improvers, each with its parent and whether its line is flagged.

    An improver adopted at round K descends from the incumbent after round K-1 (the seed for
    K = 1). A lineage is flagged when any improver in it, itself included, has findings.
    """
    ends = _round_ends(run)
    incumbent = _improver_hash(run, 0)
    if incumbent is None and ends:
        incumbent = ends[0].get("incumbent_hash") or None
    chain: list[dict[str, Any]] = []
    if incumbent:
        chain.append({"round": 0, "hash": incumbent, "parent": None})
    for ev in ends:
        k = ev["round"]
        parent = _improver_hash(run, k - 1) or incumbent
        if ev.get("adopted") and ev.get("candidate_hash"):
            chain.append({"round": k, "hash": ev["candidate_hash"], "parent": parent})
            incumbent = ev["candidate_hash"]
    ancestors: list[str] = []
    for node in chain:
        own = node["hash"] in flagged_hashes
        node["has_findings"] = own
        node["flagged_ancestors"] = [h for h in ancestors if h in flagged_hashes]
        node["flagged"] = own or bool(node["flagged_ancestors"])
        ancestors.append(node["hash"])
    return chain


def _improver_hash(run: Run, round: int) -> str | None:
    p = run.improver_path(round)
    return source_hash(p.read_text()) if p.exists() else None


def summarize(runs: list[Run], found: list[AuditEntry]) -> dict[str, Any]:
    """Counts per severity, rule, round, role, layer and runtime (linked pairs once), plus
    lineages."""
    counted = [e for e in found if e.counted]
    summary: dict[str, Any] = {
        "runs": [r.id for r in runs],
        "findings": len(counted),
        "distinct": len(found),
        "logged": sum(e.occurrences for e in found),
        "linked_pairs": sum(1 for e in found if e.finding.layer == "static" and e.linked),
    }
    for key, get in (("severity", lambda f: f.severity), ("rule", lambda f: f.rule),
                     ("round", lambda f: "-" if f.round is None else str(f.round)),
                     ("role", lambda f: f.role), ("layer", lambda f: f.layer),
                     ("runtime", lambda f: f.runtime or "-")):
        c = Counter(get(e.finding) for e in counted)
        summary[f"by_{key}"] = dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
    flagged = {e.finding.candidate_hash for e in found if e.finding.candidate_hash}
    summary["lineage"] = {r.id: lineage(r, flagged) for r in runs if r.events("round_end")}
    return summary


# ---------------------------------------------------------------- one finding and its source


def find_entry(store: RunStore, ref: str, run_ref: str | None = None) -> AuditEntry:
    """A finding by id or unique id prefix, across all runs unless a run is given."""
    ref = ref.strip().lower()
    if not ref:
        raise AuditError("give a finding id (or a unique prefix); `stop audit` lists them")
    runs = [store.open(run_ref)] if run_ref else store.list()
    hits: dict[str, AuditEntry] = {}
    for run in runs:
        for e in entries(run_findings(run)):
            if e.id.startswith(ref):
                hits.setdefault(e.id, e)
    if not hits:
        raise AuditError(f"no finding matches {ref!r}; `stop audit --all` lists them")
    if len(hits) > 1:
        ids = ", ".join(sorted(hits)[:5])
        raise AuditError(f"{ref!r} matches {len(hits)} findings ({ids}); give more of the id")
    return next(iter(hits.values()))


def candidate_source(run: Run, candidate_hash: str) -> tuple[str, str] | None:
    """(source, where it came from) for a candidate hash, or None when the run did not keep it.

    Looked up in order: the run's candidates/<hash>.py, its improvers/round_*.py, any event
    carrying the source, then code blocks of the model replies in the log (a candidate is
    usually a reply's code block, byte for byte).
    """
    if not candidate_hash:
        return None
    stored = run.candidate_path(candidate_hash)
    if stored.exists():
        return stored.read_text(), str(stored.relative_to(run.dir))
    improvers = run.dir / "improvers"
    if improvers.is_dir():
        for p in sorted(improvers.glob("round_*.py")):
            text = p.read_text()
            if source_hash(text) == candidate_hash:
                return text, str(p.relative_to(run.dir))
    events = run.events()
    for ev in events:
        src = ev.get("source")
        if isinstance(src, str) and source_hash(src) == candidate_hash:
            return src, f"{ev.get('type', 'event')} event #{ev.get('seq')}"
    for ev in events:
        if ev.get("type") != "model_call":
            continue
        for text in ev.get("texts") or []:
            for block in [*code_blocks(text), extract_code(text)]:
                for variant in (block, block.strip(), block.strip() + "\n", block.rstrip("\n")):
                    if source_hash(variant) == candidate_hash:
                        return variant, f"model reply (model_call event #{ev.get('seq')})"
    return None


def source_context(source: str, line: int | None, context: int | None = None) -> list[str]:
    """Numbered source lines with a marker on `line`; all lines when context is None."""
    lines = source.splitlines()
    if not lines:
        return []
    lo, hi = 1, len(lines)
    if context is not None and line:
        lo, hi = max(1, line - context), min(len(lines), line + context)
    width = len(str(hi))
    return [f"{'>' if n == line else ' '} {n:>{width}} | {lines[n - 1]}" for n in range(lo, hi + 1)]


def run_of(store: RunStore, f: AuditFinding) -> Run | None:
    if not f.run_id:
        return None
    path = Path(store.root) / f.run_id
    return Run(path) if (path / "config.json").exists() else None
