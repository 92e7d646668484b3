"""How many threads the next decode step should use, from what the rest of the machine is doing.

Two threads on two idle cores are faster than one; two threads on cores that the sandbox keeps
busy are much slower, because a step waits at every barrier for the thread that was descheduled.
So before each step the engine asks how much CPU other processes used over the last second
(/proc/stat's busy time less this process's own) and uses one thread fewer for each core they
kept busy. The server's threads also wait passively (OMP_WAIT_POLICY, set before llama.cpp loads)
instead of spinning, so a waiting thread gives its core back.
"""

from __future__ import annotations

import os
import time


def _busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot, or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    t = os.times()
    return t.user + t.system


class CoreChooser:
    def __init__(self, fixed: int | None = None, *, cores: int | None = None,
                 window_s: float = 1.0) -> None:
        self.fixed = fixed if fixed and fixed > 0 else None
        self.cores = max(1, min(8, cores or len(os.sched_getaffinity(0))))
        self.window_s = window_s
        self.choice = self.cores
        self.others = 0.0  # cores other processes kept busy over the last window
        self._mark = (time.monotonic(), _busy_s(), _own_s())

    def choose(self) -> int:
        if self.fixed:
            return self.fixed
        now, busy, own = time.monotonic(), _busy_s(), _own_s()
        t0, busy0, own0 = self._mark
        if now - t0 < self.window_s:
            return self.choice
        self._mark = (now, busy, own)
        if busy is None or busy0 is None:
            return self.choice
        self.others = max(0.0, (busy - busy0) - (own - own0)) / (now - t0)
        self.choice = max(1, min(self.cores, round(self.cores - self.others)))
        return self.choice
