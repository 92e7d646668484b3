"""Small file-system and process helpers shared by the run store, the model gateway and the
sandbox: atomic writes and one answer to "is this process still there?"."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, text: str) -> Path:
    """Write via a temp file and rename, so a reader never sees half a file.

    A failure (disk full, read-only folder) removes the temp file and leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def pid_alive(pid: object) -> bool:
    """True when a process with this pid exists on this machine.

    `kill(pid, 0)` raising PermissionError means the process exists but belongs to another
    user, so it counts as alive: callers use this to decide whether something that process
    owns may be taken over or removed, and taking it from a live process is the worse mistake.
    Anything that is not a positive int is not a pid (`kill(0, 0)` would probe our own group).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True
