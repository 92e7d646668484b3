"""Runs on disk: runs/<id>/ with config.json, an append-only events.jsonl, improver sources.

Crash safety: every event is one JSON line, written with a single write() and flushed and
fsynced before append() returns. A process killed mid-write leaves at most one torn last line;
readers skip it (and report it) and the next writer truncates it away before appending, so the
history never holds a broken record and nothing already written is lost.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stop.errors import StopError
from stop.paths import runs_dir
from stop.sandbox.records import AuditFinding, source_hash


class StoreError(StopError):
    """A run could not be found or read; the message names the fix."""


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seq: int | None = None

    def _repair_tail(self) -> None:
        """Cut a torn last line left by a killed writer, so appends start on a clean line."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            f.truncate(cut)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._seq is None:
                self._repair_tail()
                self._seq = sum(1 for _ in self.read())
            record = {"seq": self._seq, "ts": round(time.time(), 3), **event}
            line = json.dumps(record, default=_json_default, separators=(",", ":")) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._seq += 1
            return record

    def read(self) -> Iterator[dict[str, Any]]:
        """All complete events in order; a torn last line is skipped."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    return
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def torn_tail(self) -> bool:
        if not self.path.exists():
            return False
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    return repr(obj)


class Recorder(Protocol):
    """Where host-side components report events (model calls, sandbox runs, findings)."""

    def record(self, type: str, **fields: Any) -> None: ...

    def finding(self, finding: AuditFinding) -> None: ...


class NullRecorder:
    """Records nothing; for one-off commands that keep no run."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.findings: list[AuditFinding] = []

    def record(self, type: str, **fields: Any) -> None:
        self.events.append({"type": type, **fields})

    def finding(self, finding: AuditFinding) -> None:
        self.findings.append(finding)

    def bind(self, **context: Any) -> NullRecorder:
        return self


class RunRecorder:
    """Writes events into a run's log, stamping each with the bound context (round, phase...)."""

    def __init__(self, log: EventLog, run_id: str, context: dict[str, Any] | None = None) -> None:
        self.log = log
        self.run_id = run_id
        self.context = dict(context or {})

    def bind(self, **context: Any) -> RunRecorder:
        return RunRecorder(self.log, self.run_id, {**self.context, **context})

    def record(self, type: str, **fields: Any) -> None:
        self.log.append({"type": type, **self.context, **fields})

    def finding(self, finding: AuditFinding) -> None:
        finding.run_id = finding.run_id or self.run_id
        if finding.round is None and "round" in self.context:
            finding.round = self.context["round"]
        self.record("audit_finding", finding=finding.to_dict())


@dataclass
class Run:
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def log(self) -> EventLog:
        return EventLog(self.dir / "events.jsonl")

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise StoreError(f"run {self.id}: config.json is missing") from None
        except json.JSONDecodeError as e:
            raise StoreError(f"run {self.id}: config.json is corrupt ({e.msg} at line {e.lineno})") from None

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.log.read() if type is None or e.get("type") == type]

    def recorder(self, **context: Any) -> RunRecorder:
        return RunRecorder(self.log, self.id, context)

    def findings(self) -> list[AuditFinding]:
        return [AuditFinding.from_dict(e["finding"]) for e in self.events("audit_finding")]

    def improver_path(self, round: int) -> Path:
        return self.dir / "improvers" / f"round_{round:03d}.py"

    def write_improver(self, round: int, source: str) -> Path:
        return write_atomic(self.improver_path(round), source)

    def read_improver(self, round: int) -> str:
        p = self.improver_path(round)
        if not p.exists():
            raise StoreError(f"run {self.id} has no improver for round {round}")
        return p.read_text()

    def candidate_path(self, candidate_hash: str) -> Path:
        return self.dir / "candidates" / f"{candidate_hash}.py"

    def write_candidate(self, source: str) -> str:
        """Keep a candidate's source under its hash (once); returns the hash."""
        digest = source_hash(source)
        path = self.candidate_path(digest)
        if not path.exists():
            write_atomic(path, source)
        return digest

    def write_json(self, name: str, data: Any) -> Path:
        return write_atomic(self.dir / name, json.dumps(data, indent=2, default=_json_default) + "\n")

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.dir / name
        if not p.exists():
            return default
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"run {self.id}: {name} is corrupt ({e.msg})") from None


def write_atomic(path: Path, text: str) -> Path:
    """Write via a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class RunStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else runs_dir()

    def create(self, config: dict[str, Any], label: str = "") -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = f"{stamp}-{label}" if label else stamp
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            name = base if i == 0 else f"{base}-{i}"
            try:
                (self.root / name).mkdir()
            except FileExistsError:
                continue
            run = Run(self.root / name)
            write_atomic(run.config_path, json.dumps(config, indent=2, default=_json_default) + "\n")
            return run
        raise StoreError(f"could not allocate a run folder under {self.root}")

    def list(self) -> list[Run]:
        if not self.root.exists():
            return []
        runs = [Run(p) for p in self.root.iterdir() if p.is_dir() and (p / "config.json").exists()]
        return sorted(runs, key=lambda r: r.id)

    def open(self, ref: str) -> Run:
        """A run by exact id, unique prefix, or `latest`."""
        runs = self.list()
        if not runs:
            raise StoreError(f"no runs under {self.root}; start one with `stop run`")
        if ref == "latest":
            return max(runs, key=lambda r: (r.config_path.stat().st_mtime, r.id))
        exact = [r for r in runs if r.id == ref]
        if exact:
            return exact[0]
        matches = [r for r in runs if r.id.startswith(ref)]
        if not matches:
            raise StoreError(f"no run matches {ref!r}; `stop runs` lists them")
        if len(matches) > 1:
            names = ", ".join(r.id for r in matches[:5])
            raise StoreError(f"{ref!r} matches {len(matches)} runs ({names}); give more of the id")
        return matches[0]
