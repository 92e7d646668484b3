"""What every language-model backend speaks: one request in, one reply out, one error type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from stop.errors import StopError


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
    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    model: str = ""
    cached: bool = False


class Model(Protocol):
    name: str

    def complete(self, req: ModelRequest) -> ModelReply: ...

    def close(self) -> None: ...


class ModelError(StopError):
    """A model call failed. `retryable` marks rate limits, server errors and timeouts."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token) for backends that report none."""
    return max(1, len(text) // 4) if text else 0
