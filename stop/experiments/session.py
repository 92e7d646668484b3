"""The end of one session of an experiment: what it opened is closed, and how it ended is logged.

Every experiment (improve, tail, unsandbox) drives its work inside `ending(log)`. A model or
sandbox the session opened itself is handed to the returned `own` and closed at the end (not one
the caller passed in, which stays the caller's). The log gets one `run_end`: `interrupted` for
Ctrl-C, `failed` with the error for anything else raised (both recorded before closing, so a
close that hangs cannot lose them), `finished` after a clean close.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class _Closable(Protocol):
    def close(self) -> None: ...


class _Recorder(Protocol):
    def record(self, kind: str, **fields: object) -> object: ...


T = TypeVar("T", bound=_Closable)


@contextmanager
def ending(log: _Recorder) -> Iterator[Callable[[T], T]]:
    owned: list[_Closable] = []

    def own(thing: T) -> T:
        owned.append(thing)
        return thing

    def close_all() -> None:
        for thing in reversed(owned):  # the sandbox before the model, as they were opened
            thing.close()

    try:
        yield own
    except KeyboardInterrupt:
        log.record("run_end", status="interrupted")
        close_all()
        raise
    except BaseException as e:
        log.record("run_end", status="failed", error=f"{type(e).__name__}: {e}"[:500])
        close_all()
        raise
    close_all()
    log.record("run_end", status="finished")
