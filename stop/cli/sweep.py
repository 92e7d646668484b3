"""`stop run --runs K`: K independent runs (seeds S, S+1, ..., S+K-1) at once, one progress view.

Each run is a whole run of its own: its own folder, config, event log, model budgets and
gateway; they share the model backend and the sandbox (on a cluster: the Ray executor, whose
relay keeps every execution's services apart). Each can be resumed alone with
`stop run --resume RUN`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace
from typing import Any, TextIO

from stop.cli.display import LiveView, Progress
from stop.cli.safe import echo, visible
from stop.cluster.executor import open_executor
from stop.core.config import RunConfig
from stop.core.loop import execute, new_run
from stop.errors import StopError
from stop.models import resolve_model


class MultiDisplay(LiveView):
    """One view of several runs: a table with a row per run on a terminal, prefixed lines
    otherwise. `listener(i)` is what run i reports its events to."""

    refresh_per_second = 2

    def __init__(self, items: list[tuple[RunConfig, str]], *, stream: TextIO | None = None,
                 live: bool | None = None, quiet: bool = False) -> None:
        super().__init__(stream=stream, live=live, quiet=quiet)
        self.items = [(cfg, Progress(cfg, run_id)) for cfg, run_id in items]
        self._lock = threading.Lock()

    def listener(self, i: int) -> Any:
        cfg, progress = self.items[i]

        def on_event(event: dict[str, Any]) -> None:
            line = progress.update(event)
            if not line or self.quiet:
                return
            text = f"[{time.strftime('%H:%M:%S')}] seed {cfg.seed} {progress.run_id}: " \
                   f"{visible(line)}"
            with self._lock:
                if self._live is None:
                    print(text, file=self.stream, flush=True)
                elif event.get("type") in ("round_end", "run_end"):
                    self._live.console.print(text, markup=False, highlight=False)

        return on_event

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, padding=(0, 1))
        for head in ("seed", "run", "round", "model calls", "sandbox runs", "best val",
                     "findings", "last"):
            table.add_column(head, overflow="fold")
        for cfg, p in self.items:
            rows = dict(p.rows())
            with p.lock:
                best = "-" if p.best_val is None else f"{p.best_val:.3f}"
                calls, runs, findings = p.usage.calls, p.sandbox_runs, p.findings
            table.add_row(*(Text(visible(str(v))) for v in (
                cfg.seed, p.run_id, rows["round"], calls, runs, best, findings, rows["last"])))
        return table


def run_many(cfg: RunConfig, k: int, *, quiet: bool, address: str | None) -> list[Any]:
    """Start k runs of `cfg` with consecutive seeds and run them to the end, all at once."""
    cfgs = [replace(cfg, seed=cfg.seed + i, extra=dict(cfg.extra)) for i in range(k)]
    model = resolve_model(cfg.model, api_base=cfg.api_base, timeout_s=cfg.model_timeout_s)
    sandbox = open_executor(cfg.sandbox, executor=cfg.executor, address=address,
                            runtime=cfg.sandbox_runtime)
    runs = [new_run(c) for c in cfgs]
    for c, r in zip(cfgs, runs, strict=True):
        echo(f"run {r.id}: seed {c.seed}, {c.rounds} round(s) on {c.task}, executor "
             f"{c.executor}", err=True)
    errors: dict[int, BaseException] = {}

    def one(i: int, listener: Any) -> None:
        try:
            execute(runs[i], cfgs[i], model=model, sandbox=sandbox, listener=listener)
        except BaseException as e:  # logged as run_end failed by execute; reported below
            errors[i] = e

    try:
        with MultiDisplay([(c, r.id) for c, r in zip(cfgs, runs, strict=True)],
                          quiet=quiet) as view:
            threads = [threading.Thread(target=one, args=(i, view.listener(i)),
                                        name=f"stop-run-{i}", daemon=True) for i in range(k)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.5)
    except KeyboardInterrupt:
        sandbox.close()
        model.close()
        for r in runs:
            echo(f"interrupted: resume with `stop run --resume {r.id}`", err=True)
        sys.stderr.flush()
        os._exit(130)  # the runs' threads may still wait on their executions
    sandbox.close()
    model.close()
    if errors:
        i = min(errors)
        e = errors[i]
        why = str(e) if isinstance(e, StopError) else f"{type(e).__name__}: {e}"
        raise StopError(f"{len(errors)} of {k} runs failed; run {runs[i].id}: {why[:300]} "
                        f"(resume each with `stop run --resume RUN`)")
    return runs
