"""How an experiment's session ends: owned things closed, one run_end with the right status."""

from __future__ import annotations

import pytest

from stop.experiments.session import ending


class Log:
    def __init__(self, events: list) -> None:
        self.events = events

    def record(self, kind: str, **fields: object) -> None:
        self.events.append((kind, fields))


class Thing:
    def __init__(self, name: str, events: list) -> None:
        self.name, self.events = name, events

    def close(self) -> None:
        self.events.append(("close", {"name": self.name}))


def test_a_clean_session_closes_what_it_owns_then_records_finished() -> None:
    events: list = []
    theirs = Thing("theirs", events)
    with ending(Log(events)) as own:
        model = own(Thing("model", events))
        sandbox = own(Thing("sandbox", events))
        assert (model.name, sandbox.name, theirs.name) == ("model", "sandbox", "theirs")
    assert events == [("close", {"name": "sandbox"}), ("close", {"name": "model"}),
                      ("run_end", {"status": "finished"})]


@pytest.mark.parametrize("exc, status", [(KeyboardInterrupt(), "interrupted"),
                                         (ValueError("bad\nthing"), "failed")])
def test_a_session_that_raises_records_how_before_closing(exc, status) -> None:
    events: list = []
    with pytest.raises(type(exc)):
        with ending(Log(events)) as own:
            own(Thing("model", events))
            raise exc
    kind, fields = events[0]
    assert kind == "run_end" and fields["status"] == status
    if status == "failed":
        assert fields["error"] == "ValueError: bad\nthing"
    assert events[1:] == [("close", {"name": "model"})]
