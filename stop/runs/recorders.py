"""Where host-side components report events: the `Recorder` protocol and its three kinds.

`RunRecorder` writes to a run's log, `NullRecorder` keeps events in memory for one-off
commands, and `EventTee` (what a resumable run writes through) shows every event to a
listener and writes each once-only result a single time, however often resume redoes the work
behind it. Every recorder checks each event against the schema in `stop.runs.events`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from stop.runs.events import check_written, identity
from stop.sandbox.records import AuditFinding

Listener = Callable[[dict[str, Any]], None]


class Recorder(Protocol):
    """What a component needs to report events; `bind` returns one that stamps more context."""

    run_id: str
    context: dict[str, Any]

    def record(self, type: str, **fields: Any) -> None: ...

    def finding(self, finding: AuditFinding) -> None: ...

    def bind(self, **context: Any) -> Recorder: ...


class Appender(Protocol):
    def append(self, event: dict[str, Any]) -> dict[str, Any]: ...


class NullRecorder:
    """Records nothing on disk; keeps the events in memory (one-off commands, tests)."""

    run_id = ""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.findings: list[AuditFinding] = []
        self.context: dict[str, Any] = {}

    def record(self, type: str, **fields: Any) -> None:
        event = {"type": type, **fields}
        check_written(event)
        self.events.append(event)

    def finding(self, finding: AuditFinding) -> None:
        self.findings.append(finding)

    def bind(self, **context: Any) -> NullRecorder:
        return self


class RunRecorder:
    """Writes events into a run's log, stamping each with the bound context (round, phase...)."""

    def __init__(self, log: Appender, run_id: str, context: dict[str, Any] | None = None) -> None:
        self.log = log
        self.run_id = run_id
        self.context = dict(context or {})

    def bind(self, **context: Any) -> RunRecorder:
        return RunRecorder(self.log, self.run_id, {**self.context, **context})

    def record(self, type: str, **fields: Any) -> None:
        event = {"type": type, **self.context, **fields}
        check_written(event)
        self.log.append(event)

    def finding(self, finding: AuditFinding) -> None:
        finding.run_id = finding.run_id or self.run_id
        if finding.round is None and "round" in self.context:
            finding.round = self.context["round"]
        self.record("audit_finding", finding=finding.to_dict())


def logged_identities(events: Iterable[dict[str, Any]]) -> set[tuple]:
    """The identities of the once-only events already in a log (see `EventTee`)."""
    out = set()
    for e in events:
        key = identity(e)
        if key is not None and (e.get("type") != "model_call" or "texts" in e):
            out.add(key)
    return out


class _Seen:
    """The once-only identities written so far, shared by a tee and every tee bound from it."""

    def __init__(self, keys: set[tuple]) -> None:
        self.keys = keys
        self.lock = threading.Lock()

    def first(self, key: tuple) -> bool:
        with self.lock:
            if key in self.keys:
                return False
            self.keys.add(key)
            return True


class EventTee:
    """A recorder that writes to the run's log and shows each event to a listener.

    A once-only event (a model call, an improver run, an evaluation split...; see
    `stop.runs.events`) whose identity is already logged is shown, not written again: a
    resumed run redoes the unfinished work of a round, served from its log, and must not add
    the same result to its history twice.
    """

    def __init__(self, inner: Recorder, listener: Listener | None = None,
                 logged: set[tuple] | _Seen | None = None) -> None:
        self.inner, self.listener = inner, listener
        self._seen = logged if isinstance(logged, _Seen) else _Seen(set(logged or ()))

    @property
    def run_id(self) -> str:
        return self.inner.run_id

    @property
    def context(self) -> dict[str, Any]:
        return self.inner.context

    def bind(self, **context: Any) -> EventTee:
        return EventTee(self.inner.bind(**context), self.listener, self._seen)

    def record(self, type: str, **fields: Any) -> None:
        event = {"type": type, **self.inner.context, **fields}
        key = identity(event)
        if key is None or self._seen.first(key):
            self.inner.record(type, **fields)
        if self.listener is not None:
            self.listener(event)

    def finding(self, finding: AuditFinding) -> None:
        self.inner.finding(finding)
        if self.listener is not None:
            self.listener({"type": "audit_finding", "finding": finding.to_dict()})
