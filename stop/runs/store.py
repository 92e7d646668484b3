"""Runs on disk: runs/<id>/ with config.json, an append-only events.jsonl (`stop.runs.log`),
improver sources and candidates.

Damage: a complete log line that is not a JSON object of a known shape (see
`stop.runs.events`), or a config.json that is not a JSON object, makes that run unreadable
with one line naming the file; other runs are not affected. Every write is atomic (temp file
and rename), and a failed write is one line naming the file.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stop.fsutil import write_atomic
from stop.paths import runs_dir
from stop.runs import lock
from stop.runs.events import SCHEMA_VERSION, VERSION_FIELD, check_version
from stop.runs.log import LOG_NAME, EventLog, StoreError, json_default
from stop.runs.recorders import RunRecorder
from stop.sandbox.records import AuditFinding, source_hash

__all__ = ["EventLog", "Run", "RunStore", "StoreError"]  # EventLog: the store's runs' log

CONFIG_NAME = "config.json"


# One EventLog per log file in this process, however many Run objects point at it.
_LOGS: weakref.WeakValueDictionary[str, EventLog] = weakref.WeakValueDictionary()
_LOGS_LOCK = threading.Lock()


def _shared_log(path: Path) -> EventLog:
    key = os.path.abspath(path)
    with _LOGS_LOCK:
        log = _LOGS.get(key)
        if log is None:
            log = _LOGS[key] = EventLog(path)
        return log


@dataclass
class Run:
    dir: Path
    _log: EventLog | None = field(default=None, init=False, repr=False, compare=False)
    # Set when config.json was missing and the config was read from the log's run_start.
    config_rebuilt: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = _shared_log(self.dir / LOG_NAME)
        return self._log

    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_NAME

    def config(self) -> dict[str, Any]:
        """The run's settings (without the schema version); rebuilt from the log's run_start
        when config.json is gone."""
        try:
            text = self.config_path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return self._config_from_log()
        except UnicodeDecodeError:
            raise StoreError(f"run {self.id}: config.json is corrupt (not UTF-8 text)") from None
        except OSError as e:
            raise StoreError(f"run {self.id}: cannot read config.json ({e.strerror or e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(f"run {self.id}: config.json is corrupt ({e.msg} at line {e.lineno})") from None
        except (ValueError, RecursionError):
            raise StoreError(f"run {self.id}: config.json is corrupt") from None
        if not isinstance(data, dict):
            raise StoreError(f"run {self.id}: config.json is corrupt (a JSON {type(data).__name__}, "
                             f"not an object)")
        check_version(data.pop(VERSION_FIELD, None), f"run {self.id}")
        self.config_rebuilt = False
        return data

    def _config_from_log(self) -> dict[str, Any]:
        for e in self.log.read():
            if e.get("type") == "run_start":
                check_version(e.get(VERSION_FIELD), f"run {self.id}")
                self.config_rebuilt = True
                return dict(e["config"])
        raise StoreError(f"run {self.id}: config.json is missing and its log holds no run_start "
                         f"to rebuild it from")

    @contextmanager
    def owned(self) -> Iterator[Run]:
        """Own the run for the block: one process writes a run at a time (see stop.runs.lock).
        Raises RunBusy naming the owner, or StoreError when the run cannot be written."""
        lock.acquire(self.dir, self.id)
        try:
            for path, what in ((self.dir, "its folder"), (self.log.path, LOG_NAME)):
                if path.exists() and not os.access(path, os.W_OK):
                    raise StoreError(f"run {self.id}: {what} is read-only ({path}); make it "
                                     f"writable to run or resume it")
            yield self
        finally:
            lock.release(self.dir)

    def write_config(self, config: dict[str, Any]) -> Path:
        """config.json, stamped with the schema version (written atomically)."""
        data = {**config, VERSION_FIELD: SCHEMA_VERSION}
        return self._write(self.config_path, json.dumps(data, indent=2, default=json_default) + "\n")

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        return list(self.iter_events(type))

    def iter_events(self, types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Events in order, streamed from the log (of the given type or types)."""
        wanted = {types} if isinstance(types, str) else (set(types) if types is not None else None)
        for e in self.log.read():
            if wanted is None or e["type"] in wanted:
                yield e

    def recorder(self, **context: Any) -> RunRecorder:
        return RunRecorder(self.log, self.id, context)

    def findings(self) -> list[AuditFinding]:
        return [AuditFinding.from_dict(e["finding"]) for e in self.iter_events("audit_finding")]

    def improver_path(self, round: int) -> Path:
        return self.dir / "improvers" / f"round_{round:03d}.py"

    def write_improver(self, round: int, source: str) -> Path:
        return self._write(self.improver_path(round), source)

    def read_improver(self, round: int) -> str:
        p = self.improver_path(round)
        if not p.exists():
            raise StoreError(f"run {self.id} has no improver for round {round}")
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"run {self.id}: cannot read {p.name} ({e})") from None

    def candidate_path(self, candidate_hash: str) -> Path:
        return self.dir / "candidates" / f"{candidate_hash}.py"

    def write_candidate(self, source: str) -> str:
        """Keep a candidate's source under its hash (once); returns the hash."""
        digest = source_hash(source)
        path = self.candidate_path(digest)
        if not path.exists():
            self._write(path, source)
        return digest

    def write_json(self, name: str, data: Any) -> Path:
        return self._write(self.dir / name, json.dumps(data, indent=2, default=json_default) + "\n")

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.dir / name
        if not p.exists():
            return default
        try:
            return json.loads(p.read_bytes().decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise StoreError(f"run {self.id}: {name} is corrupt ({getattr(e, 'msg', e)})") from None
        except OSError as e:
            raise StoreError(f"run {self.id}: cannot read {name} ({e.strerror or e})") from None

    def _write(self, path: Path, text: str) -> Path:
        try:
            return write_atomic(path, text)
        except OSError as e:
            raise StoreError(f"run {self.id}: cannot write {path.relative_to(self.dir)} "
                             f"({e.strerror or e})") from None


def _is_run(p: Path) -> bool:
    try:
        return p.is_dir() and ((p / CONFIG_NAME).exists() or (p / LOG_NAME).exists())
    except OSError:
        return True  # a folder we may not look into: listed, and reported as unreadable


class RunStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else runs_dir()

    def create(self, config: dict[str, Any], label: str = "") -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = f"{stamp}-{label}" if label else stamp
        self._check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the runs folder {self.root} ({e.strerror or e}); "
                             f"set STOP_RUNS_DIR to a writable folder") from None
        for i in range(1000):
            name = base if i == 0 else f"{base}-{i}"
            try:
                (self.root / name).mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise StoreError(f"cannot create a run folder under {self.root} "
                                 f"({e.strerror or e}); set STOP_RUNS_DIR to a writable folder") from None
            run = Run(self.root / name)
            try:
                run.write_config(config)
            except StoreError:
                _remove_empty(run.dir)
                raise
            return run
        raise StoreError(f"could not allocate a run folder under {self.root}")

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the runs folder {self.root} is not a folder; set STOP_RUNS_DIR to "
                             f"a folder")

    def list(self) -> list[Run]:
        self._check_root()
        if not self.root.exists():
            return []
        try:
            runs = [Run(p) for p in self.root.iterdir() if _is_run(p)]
        except OSError as e:
            raise StoreError(f"cannot list the runs folder {self.root} ({e.strerror or e})") from None
        return sorted(runs, key=lambda r: r.id)

    def open(self, ref: str) -> Run:
        """A run by exact id, unique prefix, `latest`, or the path of its folder."""
        if os.sep in ref or ref.startswith("."):
            path = Path(ref)
            if _is_run(path):
                return Run(path)
            raise StoreError(f"{ref} is not a run folder (no config.json or events.jsonl in it)")
        runs = self.list()
        if not runs:
            raise StoreError(f"no runs under {self.root}; start one with `stop run`")
        if ref == "latest":
            return max(runs, key=lambda r: (_mtime(r), r.id))
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


def _mtime(run: Run) -> float:
    for p in (run.config_path, run.log.path):
        try:
            return p.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _remove_empty(folder: Path) -> None:
    try:
        for p in folder.iterdir():
            if p.name.startswith("."):
                p.unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        pass
