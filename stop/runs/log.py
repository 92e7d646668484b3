"""A run's append-only event log: one JSON object per line, written whole or not at all.

Crash safety: every event is one JSON line, written with a single write() and fsynced before
append() returns. A process killed mid-write leaves at most one torn last line; readers skip
it and the next writer truncates it away before appending, so the history never holds a
broken record and nothing already written is lost. Any other malformed line is damage:
reading stops with one line naming it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from stop.errors import StopError
from stop.runs.events import problem_of

LOG_NAME = "events.jsonl"


class StoreError(StopError):
    """A run could not be found, read or written; the message names the fix."""


class EventLog:
    """The append-only log of one run. Keep one per file per process (`Run.log` does), so
    every writer in the process shares one lock and one `seq` counter."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seq: int | None = None
        self._size = 0  # the file's size after this writer's last append

    @property
    def run_id(self) -> str:
        return self.path.parent.name

    def _sync(self, f: BinaryIO, size: int) -> None:
        """Cut a torn last line left by a killed writer (so appends start on a clean line) and
        take `seq` from the last event, when the file is not as this writer left it."""
        if size and _byte(f, size - 1) != b"\n":
            size = _last_newline(f, size) + 1
            f.truncate(size)
        self._seq, self._size = _next_seq(f, size), size

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write one event as one fsynced line; returns it with its `seq` and `ts`.

        Writers in other processes (there should be none while a process owns the run, but
        an experiment may add to a finished run) are serialized by an flock on the file, and
        each continues from the last line's seq, so seq never repeats.
        """
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o644)
                with os.fdopen(fd, "rb+", buffering=0) as f:
                    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
                    size = os.fstat(f.fileno()).st_size
                    if self._seq is None or size != self._size:
                        self._sync(f, size)
                    assert self._seq is not None
                    record = {"seq": self._seq, "ts": round(time.time(), 3), **event}
                    line = (json.dumps(record, default=json_default, separators=(",", ":"))
                            + "\n").encode("utf-8")
                    os.write(f.fileno(), line)
                    os.fsync(f.fileno())
            except OSError as e:
                self._seq = None  # the file is in an unknown state: read it again next time
                raise StoreError(f"run {self.run_id}: cannot write {self.path} "
                                 f"({e.strerror or e})") from None
            self._seq += 1
            self._size += len(line)
            return record

    def scan(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(offset just past the line, event) for every complete event from byte `start` on.

        A torn last line is skipped; any other malformed line raises StoreError naming it.
        """
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        except OSError as e:
            raise StoreError(f"run {self.run_id}: cannot read {LOG_NAME} ({e.strerror or e})") \
                from None
        with f:
            f.seek(start)
            offset, number = start, None if start else 0
            for raw in f:
                offset += len(raw)
                number = None if number is None else number + 1
                if not raw.endswith(b"\n"):
                    return
                event, problem = _parse(raw)
                if problem is not None:
                    where = f"line {number}" if number is not None else f"byte {offset - len(raw)}"
                    raise StoreError(f"run {self.run_id}: {LOG_NAME} {where} {problem}; the log "
                                     f"is damaged: repair or remove that line")
                yield offset, event

    def read(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """All complete events in order; a torn last line is skipped."""
        for _, event in self.scan(start):
            yield event

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def torn_tail(self) -> bool:
        if not self.path.exists():
            return False
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"


def _byte(f: BinaryIO, pos: int) -> bytes:
    f.seek(pos)
    return f.read(1)


def _last_newline(f: BinaryIO, end: int) -> int:
    """Offset of the last b"\\n" before byte `end` of a binary file, or -1."""
    pos, block = end, 1 << 16
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        i = f.read(step).rfind(b"\n")
        if i >= 0:
            return pos + i
    return -1


def _next_seq(f: BinaryIO, size: int) -> int:
    """One more than the last event's seq, read from the end of the file (no full scan); the
    count of lines when the last one carries no seq."""
    if size == 0:
        return 0
    start = _last_newline(f, size - 1) + 1
    f.seek(start)
    try:
        seq = json.loads(f.read(size - start)).get("seq")
    except (ValueError, AttributeError, RecursionError):
        seq = None
    if isinstance(seq, int) and not isinstance(seq, bool):
        return seq + 1
    f.seek(0)
    return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _parse(raw: bytes) -> tuple[dict[str, Any], str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}, "is not valid UTF-8"
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return {}, "is not valid JSON"
    problem = problem_of(event, unknown_ok=True)
    if problem is None and not isinstance(event.get("type"), str):
        problem = "has no event type"
    return (event, None) if problem is None else ({}, f"holds {problem}")


def json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    return repr(obj)
