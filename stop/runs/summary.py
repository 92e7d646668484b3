"""What `stop runs` and `stop show` print about a run, folded from its log.

The summary is a fold over the events, so it is right for killed runs too. `summary.json`
(written by the loop after every round and at the end) carries the fold's state and the log
offset it reached; reading a summary folds only the events logged after that point, so a
listing reads a few small files and the ends of the logs, not whole histories.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stop.errors import StopError
from stop.fsutil import pid_alive
from stop.runs import lock
from stop.runs.store import Run, StoreError

SUMMARY_NAME = "summary.json"
_ROW_FIELDS = ("round", "adopted", "reason", "incumbent_hash", "candidate_hash", "kept_hash",
               "incumbent", "candidate", "model_calls", "cached_calls", "tokens", "cost_usd",
               "wall_s", "findings")


@dataclass
class Usage:
    """Model calls asked of the model (not served from the log or the cache) and their cost."""

    calls: int = 0
    cached: int = 0
    tokens: int = 0
    cost_usd: float | None = 0.0  # None once a model's price was unknown: never reported as $0

    def add(self, event: dict[str, Any]) -> None:
        if event.get("type") != "model_call":
            return
        if event.get("cached"):
            self.cached += 1
            return
        self.calls += 1
        # A malformed count in a logged event must not break every listing: it counts as 0.
        self.tokens += int(_number(event.get("prompt_tokens", 0))
                           + _number(event.get("completion_tokens", 0)))
        cost = event.get("cost_usd", 0.0)
        self.cost_usd = None if self.cost_usd is None or cost is None else self.cost_usd + _number(cost)


def _number(x: Any) -> float:
    return x if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else 0


def _cost(cost: float | None) -> float | None:
    return None if cost is None else round(float(cost), 6)


def usage(events: Iterable[dict[str, Any]]) -> Usage:
    u = Usage()
    for e in events:
        u.add(e)
    return u


@dataclass
class Fold:
    """The running state of a summary; `add` takes events in log order."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    status: str = "created"
    pid: int | None = None
    error: str | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    usage: Usage = field(default_factory=Usage)
    findings: int = 0
    seq: int | None = None

    def add(self, e: dict[str, Any]) -> None:
        kind = e.get("type")
        ts = e.get("ts")
        if isinstance(ts, int | float) and 0 <= ts < 1e11:  # a time the clock can show
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.seq = e.get("seq", self.seq)
        if kind == "round_end":
            self.rows[e["round"]] = {k: e.get(k) for k in _ROW_FIELDS}
        elif kind in ("run_start", "run_resume"):
            self.status, self.pid = "running", e.get("pid")
        elif kind == "run_end":
            self.status, self.pid, self.error = e["status"], None, e.get("error")
        elif kind == "audit_finding":
            self.findings += 1
        elif kind == "model_call":
            self.usage.add(e)

    def live_status(self, run: Run | None = None) -> str:
        """finished | interrupted | failed from the last run_end; otherwise running while a
        process owns the run (its lock; for runs from before locks, while the process that
        started or resumed it is alive), killed when it is gone."""
        if self.status != "running":
            return self.status
        held = lock.owner(run.dir) if run is not None else False
        if held is False:
            held = pid_alive(self.pid)
        return "running" if held else "killed"

    def best(self) -> dict[str, Any]:
        best: dict[str, Any] = {"val": None, "test": None, "round": None}
        for t in sorted(self.rows):
            r = self.rows[t]
            kept = r["candidate"] if r["adopted"] else r["incumbent"]
            if best["val"] is None or kept["val"] > best["val"]:
                best = {"val": kept["val"], "test": kept["test"], "round": t}
        return best

    def check_rows(self, run_id: str) -> None:
        """A round_end's scores are read as numbers everywhere: refuse one that is not."""
        for t, r in self.rows.items():
            for who in ("incumbent", "candidate"):
                block = r[who]
                if not all(isinstance(block.get(k), int | float) and not isinstance(block.get(k), bool)
                           for k in ("val", "test")):
                    raise StoreError(f"run {run_id}: the round_end event of round {t} has no "
                                     f"numeric {who} val/test scores; the log is damaged")

    def checkpoint(self, offset: int) -> dict[str, Any]:
        return {"offset": offset, "seq": self.seq, "status": self.status, "pid": self.pid,
                "error": self.error, "first_ts": self.first_ts, "last_ts": self.last_ts,
                "calls": self.usage.calls, "cached": self.usage.cached,
                "tokens": self.usage.tokens, "cost_usd": self.usage.cost_usd,
                "findings": self.findings}

    @classmethod
    def from_checkpoint(cls, summary: dict[str, Any]) -> tuple[Fold, int]:
        c = summary["log"]
        fold = cls(rows={int(r["round"]): {k: r.get(k) for k in _ROW_FIELDS}
                         for r in summary["round_table"]},
                   status=c["status"], pid=c["pid"], error=c["error"], first_ts=c["first_ts"],
                   last_ts=c["last_ts"], usage=Usage(int(c["calls"]), int(c["cached"]),
                                                     int(c["tokens"]), _cost(c["cost_usd"])),
                   findings=int(c["findings"]), seq=c["seq"])
        return fold, int(c["offset"])


def fold_run(run: Run) -> tuple[Fold, int]:
    """The fold of the whole log and the offset it reached, from summary.json's checkpoint
    when that still describes the start of this log."""
    fold, start = _checkpoint(run)
    end = start
    for offset, e in run.log.scan(start):
        fold.add(e)
        end = offset
    return fold, end


def _checkpoint(run: Run) -> tuple[Fold, int]:
    try:
        saved = run.read_json(SUMMARY_NAME)
        fold, offset = Fold.from_checkpoint(saved)
        st = run.log.path.stat()
        # Appends since the checkpoint are folded on top of it; a log rewritten in place (the
        # same size, a new mtime) or cut shorter is folded again from the start.
        rewritten = st.st_size == offset and saved["log"].get("mtime_ns") not in (None, st.st_mtime_ns)
        if 0 < offset <= st.st_size and not rewritten and _seq_ending_at(run, offset) == fold.seq:
            return fold, offset
    except (OSError, StoreError, KeyError, TypeError, ValueError, AttributeError):
        pass  # no usable summary: fold the whole log
    return Fold(), 0


def _seq_ending_at(run: Run, offset: int) -> Any:
    """The seq of the event whose line ends at byte `offset` (None if no line ends there)."""
    with open(run.log.path, "rb") as f:
        start = max(0, offset - (1 << 16))
        while True:
            f.seek(start)
            chunk = f.read(offset - start)
            if not chunk.endswith(b"\n"):
                return None
            cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
            if cut >= 0 or start == 0:
                break
            start = max(0, start - (1 << 20))
    line = chunk[cut + 1:]
    try:
        return json.loads(line).get("seq")
    except (ValueError, AttributeError, RecursionError):
        return None


def summarize(run: Run) -> dict[str, Any]:
    """What `stop runs` and `stop show` print, rebuilt from the log (works for killed runs too)."""
    cfg = run.config()
    fold, offset = fold_run(run)
    return _summary(run, cfg, fold, offset)


def _summary(run: Run, cfg: dict[str, Any], fold: Fold, offset: int) -> dict[str, Any]:
    fold.check_rows(run.id)
    rows = [fold.rows[t] for t in sorted(fold.rows)]
    best = fold.best()
    first, last = fold.first_ts, fold.last_ts
    out = {
        "id": run.id, "task": cfg.get("task"), "model": cfg.get("model") or "embedded",
        "profile": cfg.get("profile"), "rounds": cfg.get("rounds"), "rounds_done": len(rows),
        "status": fold.live_status(run), "error": fold.error,
        "best": best, "round_table": rows,
        "model_calls": fold.usage.calls, "tokens": fold.usage.tokens,
        "cost_usd": _cost(fold.usage.cost_usd), "findings": fold.findings,
        "started": first,
        "duration_s": round(last - first, 3) if first is not None and last is not None else None,
    }
    if run.config_rebuilt:
        out["note"] = "config.json is missing; the config was rebuilt from the log's run_start"
    return out


def write_summary(run: Run) -> dict[str, Any]:
    """Fold the log, write summary.json with the fold's checkpoint, return the summary."""
    cfg = run.config()
    fold, offset = fold_run(run)
    summary = _summary(run, cfg, fold, offset)
    checkpoint = fold.checkpoint(offset)
    st = run.log.path.stat() if run.log.path.exists() else None
    checkpoint["mtime_ns"] = st.st_mtime_ns if st is not None and st.st_size == offset else None
    run.write_json(SUMMARY_NAME, {**summary, "log": checkpoint})
    return summary


def run_status(events: Iterable[dict[str, Any]]) -> str:
    fold = Fold()
    for e in events:
        fold.add(e)
    return fold.live_status()


def finished_rounds(run: Run) -> list[int]:
    return sorted(fold_run(run)[0].rows)


def summary_is_current(run: Run) -> bool:
    """Whether summary.json says what the log says (a kill right after the last event can
    leave it saying "running" for good)."""
    try:
        saved = run.read_json(SUMMARY_NAME)
        live = summarize(run)
    except StoreError:
        return False
    return (isinstance(saved, dict) and saved.get("status") == live["status"]
            and saved.get("rounds_done") == live["rounds_done"])


def listed(run: Run) -> dict[str, Any]:
    """The run's summary for a listing, or, for a run that cannot be read, an entry with
    status "damaged" and the one-line reason: one bad run never hides the others."""
    try:
        return summarize(run)
    except StopError as e:
        return {"id": run.id, "task": None, "model": None, "profile": None, "rounds": None,
                "rounds_done": 0, "status": "damaged", "error": str(e),
                "best": {"val": None, "test": None, "round": None}, "round_table": [],
                "model_calls": 0, "tokens": 0, "cost_usd": None, "findings": 0,
                "started": None, "duration_s": None}
