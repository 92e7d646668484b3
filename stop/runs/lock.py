"""One process owns a run at a time: an flock on runs/<id>/lock, with the owner's pid inside.

The kernel drops an flock when the process holding it dies, kill -9 included, so a crashed
owner never leaves a run that needs unlocking by hand (its lock file stays, unlocked, and the
next owner takes it over); the pid in the file only names the owner in the message a second
process gets. A clean release removes the file. Within one process the lock is re-entrant,
so `stop run --resume` can hold it from its first check to the end of `execute`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from stop.fsutil import pid_alive
from stop.runs.log import StoreError

LOCK_NAME = "lock"


class RunBusy(StoreError):
    """Another process owns the run."""


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd, self.count = fd, 1


_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.Lock()


def _key(folder: Path) -> str:
    return os.path.abspath(folder / LOCK_NAME)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def acquire(folder: Path, run_id: str, wait_s: float = 2.0) -> None:
    """Own the run in `folder` or raise RunBusy naming the owner's pid (StoreError when the
    folder cannot be written at all)."""
    key = _key(folder)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is not None:
            held.count += 1
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise StoreError(f"run {run_id}: cannot write to its folder {folder} "
                                 f"({e.strerror or e}); make it writable to run or resume it") \
                    from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # The pid may be a moment behind its lock (a new owner writes it right after
                # locking; a reader's probe holds a shared lock briefly): wait a little for it.
                owner = _read_pid(fd)
                os.close(fd)
                if (owner is not None and owner != os.getpid() and pid_alive(owner)) \
                        or time.monotonic() > deadline:
                    who = f"process {owner}" if owner else "another process"
                    raise RunBusy(f"run {run_id} is in use by {who}; wait for it to end or stop "
                                  f"it, then try again") from None
                time.sleep(0.05)
                continue
            if _same_file(fd, key):
                break
            os.close(fd)  # its owner removed it on release, after we opened it: open it anew
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the pid; only the message would lack it
        _HELD[key] = _Held(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def release(folder: Path) -> None:
    """Give the run up; the lock file goes with it (removed while still locked, so a process
    waiting on the old file sees it is gone and opens a new one)."""
    key = _key(folder)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count:
            return
        del _HELD[key]
        try:
            os.unlink(key)
        except OSError:
            pass
        os.close(held.fd)  # closing drops the flock


def owner(folder: Path) -> int | None | bool:
    """Who owns the run now: its pid, True when owned by a process that wrote no pid, None
    when nobody does, False when there is no lock file (nobody took the lock since the last
    clean release, or the run is from before locks existed)."""
    key = _key(folder)
    try:
        fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
