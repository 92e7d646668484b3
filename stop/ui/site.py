"""What every page of the web view shares: the runs folder, the caches and the templates.

Templates autoescape every value, and `finalize` makes control characters visible in every
value before it is escaped, so no template can print a candidate's string raw by forgetting a
filter. The only markup that passes unescaped is what `stop.ui.code` and `stop.ui.svg` built
(already escaped); templates never use `|safe`.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from stop.cli.safe import visible
from stop.errors import StopError
from stop.reports.report import _fmt, _welch_cell, round_series
from stop.runs.store import Run
from stop.ui.index import RunIndex, index_path
from stop.ui.loaded import EventCache, LoadedRun

HERE = Path(__file__).resolve().parent
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
HASH = re.compile(r"[0-9a-f]{6,64}")


class NotFound(StopError):
    """A run, round, candidate or finding the URL names does not exist."""


class BadRequest(StopError):
    """A filter or parameter that cannot be used; the message says which."""


@dataclass
class Html:
    body: str
    status: int = 200


@dataclass
class Site:
    runs_root: Path
    cache_root: Path | None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runs_root = Path(self.runs_root)
        self.events = EventCache()
        path = index_path(self.cache_root, self.runs_root) if self.cache_root else None
        self.index = RunIndex(self.runs_root, path, self.events, on_note=self.notes.append)
        self._env: Any = None
        self._series: dict[Path, tuple[tuple, list[dict[str, Any]]]] = {}

    # ---- runs

    def load(self, run_id: str) -> LoadedRun:
        if not RUN_ID.fullmatch(run_id or "") or run_id.startswith("."):
            raise NotFound("no such run")
        d = self.runs_root / run_id
        if not d.is_dir() or not ((d / "config.json").exists() or (d / "events.jsonl").exists()):
            raise NotFound(f"no run {run_id} under {self.runs_root}")
        return LoadedRun.load(d, self.events)

    def series(self, run: LoadedRun) -> list[dict[str, Any]]:
        """`stop report`'s round series of a run, kept until its log or config changes (its
        intervals cost a few ms per round to compute)."""
        sig = tuple(_stat(run.dir / name) for name in ("events.jsonl", "config.json"))
        kept = self._series.get(run.dir)
        if kept is not None and kept[0] == sig:
            return kept[1]
        series = round_series(run)
        if len(self._series) > 256:
            self._series.clear()
        self._series[run.dir] = (sig, series)
        return series

    def list(self) -> list[Run]:
        """Every indexed run, for the audit functions that take a store."""
        self.index.refresh()
        return [self.load(r["id"]) for r in self.index.rows(sort="id", descending=False)
                if r["status"] != "damaged"]

    # ---- templates

    @property
    def env(self) -> Any:
        if self._env is None:
            import jinja2

            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                autoescape=True, finalize=_finalize, trim_blocks=True, lstrip_blocks=True)
            env.filters.update(ci=_ci, welch=_welch, num=_num, usd=_usd, pct=_pct, when=_when,
                               dur=_dur, short=_short)
            self._env = env
        return self._env

    def render(self, template: str, status: int = 200, **context: Any) -> Html:
        return Html(self.env.get_template(template).render(**context), status)

    def error(self, status: int, message: str) -> Html:
        return self.render("error.html", status, status_code=status,
                           message=str(message).splitlines()[0] if message else "")


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return visible(value)
    return value


def _ci(point: dict[str, Any] | None) -> str:
    return _fmt(point)


def _welch(w: dict[str, Any] | None) -> str:
    return _welch_cell(w)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: Any, digits: int = 3) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return f"{x:.{digits}f}" if _finite(x) else "–"


def _usd(x: Any) -> str:
    return f"${x:.4f}" if _finite(x) else "–"


def _pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%" if _finite(x) else "–"


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if _finite(ts) else "–"


def _dur(s: Any) -> str:
    if not _finite(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _short(h: Any, n: int = 10) -> str:
    return str(h)[:n] if h else "–"
