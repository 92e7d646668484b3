"""The event schema: every event type a run's `events.jsonl` holds, with its fields.

Each line of the log is one JSON object with `seq` (its position), `ts` (Unix time), `type`
(a name below), the context the recorder was bound with (`round`, `phase`, `attempt`, `task`,
`arm`, `trial`) and the fields of its type. `required` is the read contract: what readers may
rely on, with its JSON type; the recorders refuse an event without it (a programming error),
and a reader treats a logged event without it as damage. `fields` lists what today's writers
add besides; readers must treat those as optional. Extra fields are allowed.

SCHEMA_VERSION is written into `run_start` and `config.json`. A run without one was written
before versions existed and reads as version 1; a run from a newer schema is refused with one
line instead of being misread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stop.errors import StopError

SCHEMA_VERSION = 1
VERSION_FIELD = "schema_version"

_NUMBER = (int, float)


class SchemaError(StopError):
    """A run's files come from a newer schema than this stop reads."""


@dataclass(frozen=True)
class EventType:
    name: str
    doc: str
    required: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    # Recorded at most once per identity: resume redoes work whose result is already logged,
    # and the recorder drops the repeat (see `identity`).
    once_by: tuple[str, ...] = ()


def _t(name: str, doc: str, required: dict[str, Any] | None = None, fields: str = "",
       once_by: tuple[str, ...] = ()) -> EventType:
    return EventType(name, doc, dict(required or {}), tuple(fields.split()), once_by)


EVENTS: dict[str, EventType] = {t.name: t for t in (
    # the run and its rounds (stop/core/loop.py)
    _t("run_start", "a run starts; its config as given",
       {"config": dict}, "pid schema_version resumed todo prompt_origin seed_hash"),
    _t("run_resume", "a stopped or killed run continues", {}, "finished_rounds pid"),
    _t("run_end", "how a run (or one session of it) ended: finished | interrupted | failed",
       {"status": str}, "error"),
    _t("round_start", "a round begins (a resumed round keeps its first one)",
       {"round": int}, "incumbent_hash"),
    _t("evaluation", "fresh meta-utility runs of the incumbent or the candidate, one split",
       {"round": int, "who": str, "split": str, "scores": list, "candidate_hash": str},
       "mean fallbacks note", once_by=("round", "who", "split", "candidate_hash")),
    _t("round_end", "the round's decision and what it cost",
       {"round": int, "adopted": bool, "reason": str, "candidate_hash": str,
        "incumbent": dict, "candidate": dict},
       "incumbent_hash kept_hash model_calls cached_calls tokens cost_usd wall_s findings"),
    # improver runs and utilities (stop/core/improver.py)
    _t("utility_call", "one utility call an improver made, keyed (scope, solution, occurrence)",
       {"scope": str, "solution_hash": str, "occurrence": int, "value": _NUMBER},
       "utility test", once_by=("scope", "solution_hash", "occurrence")),
    _t("improver_run", "one run of an improver in the sandbox",
       {"scope": str, "improver_hash": str, "status": str},
       "fallback reason returned_hash utility_calls lm_calls wall_s service_s",
       once_by=("scope", "improver_hash")),
    _t("improver_test", "an improver run on the base task and its solution's val/test scores",
       {"scope": str, "candidate_hash": str, "val": _NUMBER, "test": _NUMBER},
       "returned_hash fallback reason status", once_by=("scope", "candidate_hash")),
    _t("task_score", "a solution scored on a task split",
       {"task": str, "split": str, "score": _NUMBER},
       "counts candidate_hash exec_status wall_s"),
    # the model gateway (stop/models/gateway.py)
    _t("model_call", "a language-model call, fresh or served from the log or the cache",
       {"scope": str, "texts": list},
       "call_index key model n prompt_tokens completion_tokens cost_usd latency_s cached",
       once_by=("key",)),
    _t("model_retry", "a retryable model error; the call is tried again",
       {"scope": str, "error": str}, "call_index key attempt delay_s"),
    _t("model_error", "a model call failed for good", {"scope": str, "error": str},
       "call_index key model attempts"),
    _t("model_batch_truncated", "a batch_prompt asked for more responses than allowed",
       {"scope": str}, "call requested allowed"),
    # the sandbox and the audit (stop/sandbox/)
    _t("sandbox_exec", "one execution in the sandbox (no payload)", {"role": str},
       "kind limits service_requests status exit_code signal oom_killed wall_s stdout_bytes "
       "stderr_bytes limit_fired backend runtime candidate_hash findings"),
    _t("audit_finding", "an attempt to switch off a safety flag or escape",
       {"finding": dict}),
    # experiments (stop/experiments/)
    _t("transfer_trial", "one trial of the transfer experiment",
       {"task": str, "arm": str, "trial": int, "status": str, "score": _NUMBER},
       "improver_round improver_hash model solution_hash wall_s error"),
    _t("attempt", "one attempt of the unsandboxing experiment", {"index": int},
       "candidate_hash has_code truncated exec_status flag_off flag_off_static "
       "flag_off_runtime rules model_s wall_s utility_calls flag_off_calls lm_calls"),
    _t("improve_run", "a self-improvement run that belongs to an improve experiment",
       {"index": int, "run_id": str}, "seed"),
    _t("improve_arm", "one arm of one run of the improve experiment, its trials on the test split",
       {"source_run": str, "arm": str, "improver_hash": str, "test": list, "val": list},
       "trials fallbacks same_as"),
    _t("judge_label", "a model's strategy labels for one proposed improver",
       {"candidate_hash": str, "labels": list}, "source_run"),
    _t("tail_sample", "one rewrite of a task's seed solution and its val score",
       {"task": str, "index": int, "score": _NUMBER},
       "candidate_hash status error imports beats_seed"),
)}


def check_written(event: dict[str, Any]) -> None:
    """Raise ValueError for an event a recorder must not write (a bug in the caller)."""
    problem = problem_of(event)
    if problem is not None:
        raise ValueError(f"event schema: {problem}")


def problem_of(event: Any, *, unknown_ok: bool = False) -> str | None:
    """What is wrong with one event, or None. Readers pass unknown_ok (a newer writer's types)."""
    if not isinstance(event, dict):
        return f"an event must be a JSON object, not {type(event).__name__}"
    name = event.get("type")
    spec = EVENTS.get(name) if isinstance(name, str) else None
    if spec is None:
        if unknown_ok and isinstance(name, str):
            return None
        return f"unknown event type {name!r}"
    for key, kind in spec.required.items():
        if key not in event:
            return f"{name} event without {key!r}"
        value = event[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, _NUMBER)):
            return f"{name} event with {key!r} of type {type(value).__name__}"
    return None


def identity(event: dict[str, Any]) -> tuple | None:
    """The key under which a once-only event is recorded at most once, or None."""
    spec = EVENTS.get(event.get("type"))  # type: ignore[arg-type]
    if spec is None or not spec.once_by:
        return None
    values = tuple(event.get(k) for k in spec.once_by)
    if not all(isinstance(v, str | int) for v in values):
        return None
    return (spec.name, *values)


def check_version(version: Any, what: str) -> None:
    """Refuse files from a newer schema; absent means version 1."""
    if version is None:
        return
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SchemaError(f"{what}: {VERSION_FIELD} {version!r} is not a schema version")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{what} was written with event schema {version}; this stop reads up "
                          f"to {SCHEMA_VERSION}: upgrade stop to read it")
