"""An index of run summaries for the runs page: a SQLite cache, rebuilt from the logs as needed.

The event logs stay the source of truth. Each row remembers the size and modification time of
the files it was built from (config.json, events.jsonl, summary.json, transfer.json); a refresh
stats every run folder and rebuilds only the rows whose files changed, plus the rows of runs
that were running (their process may have died since, which changes no file). The file lives
under the cache dir, never in the runs folder, and can be deleted at any time: a missing or
unreadable index is rebuilt from the logs, and one that cannot be written is kept in memory.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stop.reports import audit as A
from stop.runs.summary import summarize
from stop.sandbox.records import SEVERITIES
from stop.ui.loaded import EventCache, LoadedRun

SCHEMA = 2
FILES = ("config.json", "events.jsonl", "summary.json", "transfer.json")
COLUMNS = {
    "id": "TEXT PRIMARY KEY", "kind": "TEXT", "task": "TEXT", "model": "TEXT", "profile": "TEXT",
    "status": "TEXT", "rounds": "INTEGER", "rounds_done": "INTEGER", "best_val": "REAL",
    "best_test": "REAL", "best_round": "INTEGER", "cost": "REAL", "tokens": "INTEGER",
    "model_calls": "INTEGER", "findings": "INTEGER", "top_severity": "TEXT", "started": "REAL",
    "duration": "REAL", "transfer": "INTEGER", "bad_lines": "INTEGER", "error": "TEXT",
    "sig": "TEXT",
}
EXPERIMENTS = ("unsandbox", "improve")
# What the runs page may sort by (column names are never taken from the request).
SORTABLE = ("id", "task", "model", "profile", "status", "rounds_done", "best_val", "best_test",
            "cost", "tokens", "findings", "started", "duration")


def index_path(cache: Path, runs_root: Path) -> Path:
    key = hashlib.sha256(str(Path(runs_root).resolve()).encode()).hexdigest()[:16]
    return Path(cache) / "ui" / f"runs-{key}.sqlite"


def signature(run_dir: str) -> str | None:
    """Size and mtime of a run's files, or None when the folder holds no run."""
    parts = []
    for name in FILES:
        try:
            st = os.stat(os.path.join(run_dir, name))
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    if parts[0] == "-" and parts[1] == "-":
        return None
    return "|".join(parts)


def summary_row(run: LoadedRun) -> dict[str, Any]:
    """The runs page's row of one run, from stop's own summary and audit functions."""
    cfg = run.config()
    s = summarize(run)
    entries = [e for e in A.entries(A.run_findings(run)) if e.counted]
    ranks = [SEVERITIES.index(e.finding.severity) for e in entries
             if e.finding.severity in SEVERITIES]
    best = s.get("best") or {}
    return {
        "id": run.id, "kind": kind if (kind := cfg.get("experiment")) in EXPERIMENTS else "run",
        "task": s.get("task"), "model": s.get("model"), "profile": s.get("profile"),
        "status": s.get("status"), "rounds": s.get("rounds"), "rounds_done": s.get("rounds_done"),
        "best_val": best.get("val"), "best_test": best.get("test"), "best_round": best.get("round"),
        "cost": s.get("cost_usd"), "tokens": s.get("tokens"), "model_calls": s.get("model_calls"),
        "findings": len(entries),
        "top_severity": SEVERITIES[max(ranks)] if ranks else None,
        "started": s.get("started"), "duration": s.get("duration_s"),
        "transfer": int((run.dir / "transfer.json").exists()
                        or any(e.get("type") == "transfer_trial" for e in run.loaded)),
        "bad_lines": run.bad_lines,
        "error": s.get("error") or s.get("note") or run.config_note or None,
    }


def damaged_row(run_id: str, error: BaseException) -> dict[str, Any]:
    reason = str(error).splitlines()[0] if str(error) else ""
    return {**dict.fromkeys(COLUMNS), "id": run_id, "kind": "run", "status": "damaged",
            "error": f"{type(error).__name__}: {reason}"[:300], "findings": 0, "transfer": 0}


class RunIndex:
    def __init__(self, runs_root: Path, path: Path | None, events: EventCache,
                 on_note: Callable[[str], None] = lambda note: None) -> None:
        self.root = Path(runs_root)
        self.events = events
        self.lock = threading.Lock()
        self.path = path
        self.db = self._open(path, on_note)

    def _open(self, path: Path | None, on_note: Callable[[str], None]) -> sqlite3.Connection:
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, check_same_thread=False)
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:
                    db.execute("DROP TABLE IF EXISTS runs")
                return self._schema(db)
            except (OSError, sqlite3.DatabaseError) as e:
                # A corrupt file is only a cache: start it afresh; an unwritable one, in memory.
                try:
                    path.unlink(missing_ok=True)
                    return self._schema(sqlite3.connect(path, check_same_thread=False))
                except (OSError, sqlite3.DatabaseError):
                    on_note(f"run index kept in memory ({path} not usable: {e})")
        return self._schema(sqlite3.connect(":memory:", check_same_thread=False))

    @staticmethod
    def _schema(db: sqlite3.Connection) -> sqlite3.Connection:
        cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
        db.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
        db.execute(f"PRAGMA user_version = {SCHEMA}")
        db.commit()
        return db

    def refresh(self) -> int:
        """Bring the index up to date with the runs folder; returns how many rows were rebuilt."""
        with self.lock:
            known = {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT id, sig, status FROM runs")}
            seen: set[str] = set()
            rebuilt = 0
            try:
                entries = list(os.scandir(self.root))
            except OSError:
                entries = []
            for entry in entries:
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                sig = signature(entry.path)
                if sig is None:
                    continue
                seen.add(entry.name)
                old = known.get(entry.name)
                if old is not None and old[0] == sig and old[1] != "running":
                    continue
                row = self._build(entry.name)
                row["sig"] = sig
                names = ", ".join(COLUMNS)
                marks = ", ".join("?" for _ in COLUMNS)
                self.db.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})",
                                [row.get(k) for k in COLUMNS])
                rebuilt += 1
            gone = [k for k in known if k not in seen]
            self.db.executemany("DELETE FROM runs WHERE id = ?", [(k,) for k in gone])
            self.db.commit()
            return rebuilt

    def _build(self, run_id: str) -> dict[str, Any]:
        try:
            return summary_row(LoadedRun.load(self.root / run_id, self.events))
        except Exception as e:  # noqa: BLE001 - a damaged run is listed with its reason
            return damaged_row(run_id, e)

    def rows(self, *, task: str | None = None, model: str | None = None,
             status: str | None = None, kind: str | None = None, sort: str = "started",
             descending: bool = True, where_extra: str = "") -> list[dict[str, Any]]:
        conds, args = [], []
        for col, value in (("task", task), ("model", model), ("status", status), ("kind", kind)):
            if value:
                conds.append(f"{col} = ?")
                args.append(value)
        if where_extra:
            conds.append(where_extra)
        order = sort if sort in SORTABLE else "started"
        direction = "DESC" if descending else "ASC"
        sql = (f"SELECT * FROM runs {'WHERE ' + ' AND '.join(conds) if conds else ''} "
               f"ORDER BY {order} IS NULL, {order} {direction}, id {direction}")
        with self.lock:
            cur = self.db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def choices(self, column: str) -> list[str]:
        """Distinct values of a filterable column, for the filter menus."""
        if column not in ("task", "model", "status"):
            raise ValueError(column)
        with self.lock:
            cur = self.db.execute(f"SELECT DISTINCT {column} FROM runs WHERE {column} IS NOT NULL "
                                  f"ORDER BY {column}")
            return [str(r[0]) for r in cur.fetchall()]

    def close(self) -> None:
        with self.lock:
            self.db.close()
