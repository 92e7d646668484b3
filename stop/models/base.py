"""What every language-model backend speaks: one request in, one reply out, one error type.

A `Model` also says what it is, so the gateway never has to ask which class it holds: whether
its replies may be kept in the shared disk cache (`cacheable`), which replies it brings already
recorded (`recorded`, a replayed run's), whether it can answer anything else (`recorded_only`),
the model name request keys are made with (`key_name`) and whether its price is known
(`price_known`). Backends subclass `Model` to inherit the defaults of an ordinary paid model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from stop.errors import StopError

_NOTHING_RECORDED: Mapping[str, dict] = MappingProxyType({})


@dataclass
class ModelRequest:
    """One chat request. `n` samples of the same messages count as one request."""

    messages: list[dict]
    n: int = 1
    temperature: float = 0.7
    max_tokens: int = 1024

    def canonical(self) -> dict[str, Any]:
        """The fields that decide the answer, in a stable form for hashing."""
        return {
            "messages": [{"role": m.get("role", "user"), "content": m.get("content", "")}
                         for m in self.messages],
            "n": int(self.n),
            "temperature": round(float(self.temperature), 6),
            "max_tokens": int(self.max_tokens),
        }


@dataclass
class ModelReply:
    """A model's answer. `cost_usd` is None when the model's price is unknown (never a guess of 0)."""

    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    latency_s: float = 0.0
    model: str = ""
    cached: bool = False


class Model(Protocol):
    """A language-model backend. The class attributes are the defaults of a paid remote model."""

    name: str
    # Replies may be kept in the on-disk cache and served to later runs. Scripted and replayed
    # replies are test- or run-specific: caching them would leak one test's script into another.
    cacheable: bool = True
    # Replies this model brings already recorded, by request key (a replayed run's calls).
    recorded: Mapping[str, dict] = _NOTHING_RECORDED
    # True: it answers only from `recorded`; anything else is a replay miss, never a fresh call.
    recorded_only: bool = False

    @property
    def key_name(self) -> str:
        """The model name request keys are made with (a replay uses the recorded model's)."""
        return self.name

    def price_known(self) -> bool:
        """Whether the cost of a reply can be known; a cost cap needs it."""
        return True

    def complete(self, req: ModelRequest) -> ModelReply: ...

    def close(self) -> None: ...


class ModelError(StopError):
    """A model call failed. `retryable` marks rate limits, server errors, timeouts and short
    replies; `retry_after_s` is the wait the server asked for (Retry-After), if any."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class ModelArgumentError(ModelError):
    """A caller passed malformed arguments to a model call: its fault, not the model's."""


def check_batch_args(expertise: Any, messages: Any, temperature: Any) -> None:
    """The one check of `batch_prompt`'s arguments, for the host facade and the service handler."""
    if not isinstance(expertise, str) or not isinstance(messages, list | tuple) \
            or not all(isinstance(m, str) for m in messages):
        raise ModelArgumentError("batch_prompt takes an expertise string and a list of message strings")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
            or not 0.0 <= temperature <= 2.0:  # NaN fails this too
        raise ModelArgumentError(f"temperature must be a number in [0, 2], got {temperature!r}")


def total_cost(calls: Iterable[Mapping[str, Any]]) -> float | None:
    """Sum of `cost_usd` over model_call events or replies; None when any price was unknown."""
    total = 0.0
    for c in calls:
        cost = c.get("cost_usd", 0.0)
        if cost is None:
            return None
        total += float(cost)
    return round(total, 6)


def format_cost(cost: float | None, *, dollar: bool = True) -> str:
    """A cost for people: `$0.0123`, or `unknown` where a price was unknown (never `$0`)."""
    if cost is None:
        return "unknown"
    return f"${cost:.4f}" if dollar else f"{cost:.4f}"


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token) for backends that report none."""
    return max(1, len(text) // 4) if text else 0
