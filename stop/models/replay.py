"""A model that serves a recorded run's replies; the gateway looks them up by request key."""

from __future__ import annotations

from collections.abc import Mapping

from stop.models.base import Model, ModelError, ModelReply, ModelRequest
from stop.runs.replay import recorded_replies as logged_replies
from stop.runs.store import RunStore


class ReplayModel(Model):
    """A recorded run's replies. A `Gateway` serves them by key; anything else is a miss.

    Recorded replies were paid for by the original run, so a replay is free and never cached.
    """

    cacheable = False
    recorded_only = True

    def __init__(self, run_id: str, recorded: Mapping[str, dict] | None = None) -> None:
        self.name = f"replay:{run_id}"
        self.run_id = run_id
        self.recorded = dict(recorded or {})
        names = [e.get("model") for e in self.recorded.values() if e.get("model")]
        # Keys were computed with the recorded model's name; replay must ask for the same keys.
        self._key_name = max(set(names), key=names.count) if names else self.name

    @property
    def key_name(self) -> str:
        return self._key_name

    def complete(self, req: ModelRequest) -> ModelReply:
        raise ModelError(f"replay of run {self.run_id}: no recorded reply for this request")

    def close(self) -> None:
        pass


def recorded_replies(run_ref: str) -> tuple[str, dict[str, dict]]:
    """(run id, {key: model_call event}) of a stored run, for replay and resume."""

    run = RunStore().open(run_ref)
    return run.id, logged_replies(run)
