"""Run a child without the privileges that bypass permission checks, so tests of read-only
files and other users' processes mean the same as root as they do for a normal user."""

from __future__ import annotations

import ctypes
import os

# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_KILL, CAP_LINUX_IMMUTABLE
_CAPS = (1, 2, 3, 5, 9)


def drop_privileges() -> None:
    """subprocess preexec_fn: as root, drop those capabilities from the program it execs."""
    if os.getuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in _CAPS:
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
