"""Progress of a run as it happens: a rich live panel on a terminal, plain lines otherwise.

Both read the same events the run writes to its log (plus `phase` notes that are not logged),
and both write to stderr: stdout stays free for data.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from stop.cli.safe import visible
from stop.core.config import RunConfig
from stop.models.base import format_cost
from stop.runs.summary import Usage


def round_call_budget(cfg: RunConfig) -> int:
    """The most model calls one round can make: the self-improvement run's own calls, plus a
    full base-task budget for every improver run of every meta-utility call and re-evaluation."""
    return cfg.meta_lm_budget + (cfg.meta_utility_budget + 2) * cfg.n_tests * cfg.lm_budget


class Progress:
    """What the display shows, updated from events (thread-safe)."""

    def __init__(self, cfg: RunConfig, run_id: str) -> None:
        self.cfg, self.run_id = cfg, run_id
        self.round = 0
        self.phase = "starting"
        self.round_calls = 0
        self.usage = Usage()
        self.best_val: float | None = None
        self.best_test: float | None = None
        self.findings = 0
        self.sandbox_runs = 0
        self.last = ""
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def update(self, e: dict[str, Any]) -> str | None:
        """Apply one event; return a line worth printing on its own, if any."""
        kind = e.get("type")
        with self.lock:
            if kind == "phase":
                self.round, self.phase = e.get("round", self.round), e["phase"]
                return f"round {self.round}/{self.cfg.rounds}: {self.phase}"
            if kind == "round_start":
                self.round, self.round_calls = e["round"], 0
                return None
            if kind == "model_call":
                self.usage.add(e)
                self.round_calls += 0 if e.get("cached") else 1
                return None
            if kind == "sandbox_exec":
                self.sandbox_runs += 1
                return None
            if kind == "audit_finding":
                self.findings += 1
                f = e.get("finding", {})
                self.last = f"finding {f.get('severity')} {f.get('rule')}: {f.get('attempted', '')[:80]}"
                return self.last
            if kind == "improver_test":
                self.last = (f"improver {e['candidate_hash'][:8]} run -> val {e['val']:.3f} "
                             f"test {e['test']:.3f}" + (" (fell back)" if e.get("fallback") else ""))
                return self.last
            if kind == "evaluation" and e.get("split") == "val":
                self.last = f"{e['who']} {e['candidate_hash'][:8]}: meta-utility val {e['mean']:.3f}"
                return self.last
            if kind == "round_end":
                kept = e["candidate"] if e["adopted"] else e["incumbent"]
                if self.best_val is None or kept["val"] > self.best_val:
                    self.best_val, self.best_test = kept["val"], kept["test"]
                verdict = "adopted" if e["adopted"] else "kept the incumbent"
                return f"round {e['round']} done: {verdict}: {e['reason']}"
            if kind == "run_end":
                self.phase = e.get("status", "")
                return f"run {self.run_id} {self.phase}"
        return None

    def rows(self) -> list[tuple[str, str]]:
        with self.lock:
            best = ("-" if self.best_val is None
                    else f"val {self.best_val:.3f}  test {self.best_test:.3f}")
            return [
                ("run", self.run_id),
                ("round", f"{self.round}/{self.cfg.rounds}  {self.phase}"),
                ("model calls", f"{self.round_calls}/{round_call_budget(self.cfg)} this round, "
                                f"{self.usage.calls} in all ({self.usage.cached} served from "
                                f"the log/cache)"),
                ("tokens", f"{self.usage.tokens:,}"),
                ("cost", format_cost(self.usage.cost_usd)),
                ("sandbox runs", str(self.sandbox_runs)),
                ("best meta-utility", best),
                ("findings", str(self.findings)),
                ("last", self.last or "-"),
                ("elapsed", f"{time.monotonic() - self.started:.0f} s"),
            ]


class LiveView:
    """A view that redraws itself with rich on a terminal (`live=None` decides by the stream)
    and prints lines otherwise; subclasses give `_render` and how often to redraw."""

    refresh_per_second = 4

    def __init__(self, *, stream: TextIO | None = None, live: bool | None = None,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet
        self._live: Any = None

    def _render(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Any:
        if self.live and not self.quiet:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=Console(file=self.stream),
                              refresh_per_second=self.refresh_per_second, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None


class Display(LiveView):
    """The listener a run reports to. `live=None` picks rich on a terminal, lines otherwise."""

    def __init__(self, cfg: RunConfig, run_id: str, *, stream: TextIO | None = None,
                 live: bool | None = None, quiet: bool = False) -> None:
        super().__init__(stream=stream, live=live, quiet=quiet)
        self.progress = Progress(cfg, run_id)

    def __call__(self, event: dict[str, Any]) -> None:
        line = self.progress.update(event)
        if not line or self.quiet:
            return
        stamp = time.strftime("%H:%M:%S")
        line = visible(line)  # findings and phases carry text a candidate wrote
        if self._live is None:
            print(f"[{stamp}] {line}", file=self.stream, flush=True)
        elif event.get("type") in ("round_end", "audit_finding", "run_end"):
            self._live.console.print(f"[{stamp}] {line}", markup=False, highlight=False)

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        for k, v in self.progress.rows():
            # Text, not a markup string: "[link=...]" in a finding must stay text.
            table.add_row(k, Text(visible(v)))
        return table
