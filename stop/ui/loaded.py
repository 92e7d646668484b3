"""Runs as the web view reads them: each log parsed once, then only what was appended since.

`EventCache` keeps the parsed events of recently viewed logs with the byte offset they were
read to. The logs are append-only, so a page view of a running run reads just the new lines;
a log that shrank or was replaced (another inode) is read again from the start. Lines that
the store would refuse (not UTF-8, not JSON, not an object with its type's fields) are
skipped and counted, never fatal; a torn last line waits until it is complete.

`LoadedRun` is a `Run` whose `events()` and `config()` come from that cache, so the report,
audit and summary functions of stop can be reused as they are, each reading memory instead of
the whole log again.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stop.runs.events import problem_of
from stop.runs.recorders import NullRecorder
from stop.runs.store import Run, StoreError


@dataclass
class _Parsed:
    inode: int
    offset: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0


class EventCache:
    """Parsed event logs by path; past `max_events` in all, the least recently used go first."""

    def __init__(self, max_events: int = 1_000_000) -> None:
        self.max_events = max_events
        self._held = 0
        self._logs: OrderedDict[Path, _Parsed] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: Path) -> tuple[list[dict[str, Any]], int]:
        """(events in order, lines skipped as damaged) of the log at `path`."""
        with self._lock:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._logs.pop(path, None)
                return [], 0
            parsed = self._logs.pop(path, None)
            if parsed is not None:
                self._held -= len(parsed.events)
            if parsed is None or parsed.inode != st.st_ino or st.st_size < parsed.offset:
                parsed = _Parsed(inode=st.st_ino)
            if st.st_size > parsed.offset:
                _read_new(path, parsed, st.st_size)
            while self._logs and self._held + len(parsed.events) > self.max_events:
                _, old = self._logs.popitem(last=False)
                self._held -= len(old.events)
            self._logs[path] = parsed
            self._held += len(parsed.events)
            return list(parsed.events), parsed.bad_lines


def _read_new(path: Path, parsed: _Parsed, size: int) -> None:
    with open(path, "rb") as f:
        f.seek(parsed.offset)
        data = f.read(size - parsed.offset)
    end = data.rfind(b"\n") + 1  # a torn last line waits until its writer finishes it
    for line in data[:end].split(b"\n")[:-1]:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
            parsed.bad_lines += 1
            continue
        # The store's read contract: an object with its type's required fields.
        if problem_of(obj, unknown_ok=True) is None and isinstance(obj.get("type"), str):
            parsed.events.append(obj)
        else:
            parsed.bad_lines += 1
    parsed.offset += end


@dataclass
class LoadedRun(Run):
    """A run whose log was read once for this view (see the module docstring)."""

    loaded: list[dict[str, Any]] = field(default_factory=list, repr=False)
    bad_lines: int = 0
    config_note: str = ""
    _config: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, dir: Path, cache: EventCache) -> LoadedRun:
        events, bad = cache.read(Path(dir) / "events.jsonl")
        return cls(Path(dir), loaded=events, bad_lines=bad)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        if type is None:
            return list(self.loaded)
        return [e for e in self.loaded if e.get("type") == type]

    def iter_events(self, types: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        wanted = {types} if isinstance(types, str) else (set(types) if types is not None else None)
        return iter([e for e in self.loaded if wanted is None or e.get("type") in wanted])

    # The view is read-only: functions of stop that would record or write something as they
    # read (bookkeeping such as an experiment naming a run it found) record into nothing here.
    def recorder(self, **context: Any) -> Any:
        return NullRecorder()

    def _write(self, path: Path, text: str) -> Path:
        raise StoreError(f"run {self.id}: the web view writes nothing ({path.name})")

    def config(self) -> dict[str, Any]:
        """The store's config(); when it cannot give one, the config the log's run_start
        recorded (with a note saying why)."""
        if self._config is not None:
            return self._config
        try:
            self._config = super().config()
            return self._config
        except StoreError as e:
            why = str(e)
        for ev in self.loaded:
            if ev.get("type") == "run_start" and isinstance(ev.get("config"), dict):
                self._config = dict(ev["config"])
                self.config_rebuilt = True
                self.config_note = f"{why}; the configuration shown is the one its log recorded"
                return self._config
        raise StoreError(why)
