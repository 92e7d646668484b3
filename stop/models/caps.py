"""Per-run spending caps on tokens and cost, enforced on the host before each fresh model call.

One `SpendingCaps` ledger serves every gateway of a run (the loop opens one gateway per round),
and a resumed run starts it from what its log says was spent, so a cap holds across rounds,
kills and resumes. Replies served from the log or the disk cache cost nothing and are not
counted. A call started under a cap may end over it; the next one stops the run with a
`SpendingCapReached` that says how to resume with a higher cap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stop.errors import StopError
from stop.models.base import Model, ModelReply


class SpendingCapReached(StopError):
    """A run's token or cost cap is spent: the run stops, and resumes with a higher cap."""


class PriceUnknown(StopError):
    """A cost cap was asked for a model whose price is unknown."""


def refuse_unpriced(model: Model, max_cost_usd: float | None) -> None:
    """Raise PriceUnknown when a cost cap is asked of a model whose price is unknown."""
    SpendingCaps(max_cost_usd=max_cost_usd).require_price(model)


def _suggest(used: float, cap: float) -> str:
    return f"{used + cap:.4g}"


def _dollars(x: float) -> str:
    return f"${x:,.4f}" if x >= 0.1 else f"${x:.3g}"


@dataclass
class SpendingCaps:
    """A run's caps and what it has spent so far. Thread-safe."""

    max_tokens_total: int | None = None
    max_cost_usd: float | None = None
    run_id: str | None = None
    tokens_used: int = 0
    cost_usd: float = 0.0
    cost_unknown: bool = False  # some reply had no known price
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def of_run(cls, events: Iterable[Mapping[str, Any]], *, run_id: str | None,
               max_tokens_total: int | None, max_cost_usd: float | None) -> SpendingCaps:
        """The ledger of a run, started from the fresh calls (and short replies) in its log."""
        caps = cls(max_tokens_total=max_tokens_total, max_cost_usd=max_cost_usd, run_id=run_id)
        for e in events:
            kind = e.get("type")
            if (kind == "model_call" and not e.get("cached")) or (
                    kind in ("model_retry", "model_error") and "prompt_tokens" in e):
                caps._add(int(e.get("prompt_tokens") or 0) + int(e.get("completion_tokens") or 0),
                          e.get("cost_usd", 0.0))
        return caps

    def require_price(self, model: Model) -> None:
        """Refuse a cost cap up front when the model's price is unknown."""
        if self.max_cost_usd is not None and not model.price_known():
            raise PriceUnknown(f"--max-cost needs a known price, and the price of model {model.name} "
                               f"is unknown (litellm has no price for it); drop --max-cost or "
                               f"cap tokens with --max-tokens-total")

    def _add(self, tokens: int, cost: float | None) -> None:
        self.tokens_used += tokens
        if cost is None:
            self.cost_unknown = True
        else:
            self.cost_usd += float(cost)

    def charge(self, reply: ModelReply) -> None:
        with self._lock:
            self._add(reply.prompt_tokens + reply.completion_tokens, reply.cost_usd)

    def check(self) -> None:
        """Raise before a fresh call when a cap is spent."""
        resume = f"`stop run --resume {self.run_id}" if self.run_id else None
        with self._lock:
            if self.max_tokens_total is not None and self.tokens_used >= self.max_tokens_total:
                hint = (f"resume with a higher cap: {resume} --max-tokens-total "
                        f"{self.tokens_used + self.max_tokens_total}`" if resume
                        else "raise max_tokens_total to continue")
                raise SpendingCapReached(f"token cap reached: {self.tokens_used:,} of "
                                         f"{self.max_tokens_total:,} tokens used in this run; {hint}")
            if self.max_cost_usd is None:
                return
            if self.cost_unknown:
                raise PriceUnknown("cost cap cannot be enforced: a reply came back with no known "
                                   "price; drop --max-cost or cap tokens with --max-tokens-total")
            if self.cost_usd >= self.max_cost_usd:
                hint = (f"resume with a higher cap: {resume} --max-cost "
                        f"{_suggest(self.cost_usd, self.max_cost_usd)}`" if resume
                        else "raise max_cost_usd to continue")
                raise SpendingCapReached(f"cost cap reached: {_dollars(self.cost_usd)} of "
                                         f"{_dollars(self.max_cost_usd)} spent in this run; {hint}")
