"""Following a run while it goes: its current phase from the log, and a change stream.

The phase a running round is in is not logged as such (the loop shows it to its own display
only), so it is read from what the round has logged so far: the self-improvement step until the
re-evaluation's improver runs appear (their scopes name the incumbent or the candidate), then
the decision once both evaluations are in.

The stream is server-sent events: one `change` message whenever the run's log changes size or
time, and at least every few seconds (a run whose process died changes no file but is no
longer running). It carries numbers only; the page then fetches its live fragment, rendered
and escaped by the server like every page.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

FINAL = ("finished", "failed", "interrupted", "killed", "damaged")


def open_round(events: list[dict[str, Any]]) -> int | None:
    """The round started and not yet ended, if any."""
    started = [e.get("round") for e in events if e.get("type") == "round_start"]
    ended = {e.get("round") for e in events if e.get("type") == "round_end"}
    todo = [t for t in started if t not in ended and isinstance(t, int)]
    return todo[-1] if todo else None


def current_phase(events: list[dict[str, Any]], status: str) -> str:
    """What a run is doing now, in words."""
    if status != "running":
        return status
    t = open_round(events)
    if t is None:
        return "between rounds" if any(e.get("type") == "round_end" for e in events) else "starting"
    phase = "self-improvement: the improver rewrites itself"
    for e in events:
        if e.get("round") != t:
            continue
        scope = str(e.get("scope") or "")
        if e.get("type") == "evaluation" and e.get("split") == "test":
            phase = ("re-evaluating the candidate" if e.get("who") == "incumbent"
                     else "deciding on adoption")
        elif "/eval/incumbent" in scope:
            phase = "re-evaluating the incumbent"
        elif "/eval/candidate" in scope:
            phase = "re-evaluating the candidate"
    return f"round {t}: {phase}"


def log_signature(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


async def change_stream(path: Path, *, poll_s: float = 0.5, beat_s: float = 5.0,
                        lifetime_s: float = 600.0) -> AsyncIterator[str]:
    """Server-sent events for the log at `path`; ends after `lifetime_s` (the browser's
    EventSource reconnects by itself)."""
    yield "retry: 2000\n\n"
    last: tuple[int, int] | None = None
    last_sent = 0.0
    end = time.monotonic() + lifetime_s
    while time.monotonic() < end:
        sig = log_signature(path)
        now = time.monotonic()
        if sig != last or now - last_sent >= beat_s:
            last, last_sent = sig, now
            yield f"event: change\ndata: {json.dumps({'size': sig[0], 'mtime_ns': sig[1]})}\n\n"
        await asyncio.sleep(poll_s)
