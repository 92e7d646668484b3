"""Host services: what answers an improver's `utility(...)` and `language_model.batch_prompt(...)`.

Threat model: the parameters come from the candidate and are hostile; budgets live here, on the
host, and nothing the container sends changes them. A handler refuses with `ServiceError`, whose
message the candidate sees as the same exception inside the container; any other exception is
a host bug and reaches the candidate only as "host service failed" (see the bridge).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stop.container import protocol


class ServiceError(Exception):
    """Raised by a host service handler; re-raised inside the container with the same message."""


ServiceHandler = Callable[[str, dict], Any]


@dataclass
class Allowance:
    """A budget of calls counted on the host. Not locked: the caller holds its service's lock."""

    what: str
    limit: int
    used: int = 0
    refused: int = 0

    def take(self) -> None:
        """Spend one call, or refuse (and count the refusal) when the budget is spent."""
        if self.used >= self.limit:
            self.refused += 1
            raise ServiceError(f"{self.what} budget exhausted: {self.used} of {self.limit} "
                               "calls used")
        self.used += 1


class Services:
    """A `ServiceHandler` with a dispatch table: method name -> handler of its parameters.

    Subclasses override `batch_prompt` and `utility` (the two methods of `protocol.METHODS`);
    a method a subclass leaves alone, or one the protocol does not know, is refused.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handlers: dict[str, Callable[[dict], Any]] = {
            protocol.BATCH_PROMPT: self.batch_prompt,
            protocol.UTILITY: self.utility,
        }

    def __call__(self, method: str, params: dict) -> Any:
        handler = self.handlers.get(method)
        if handler is None:
            raise ServiceError(f"unknown service {method!r}")
        return handler(params)

    def batch_prompt(self, params: dict) -> list[str]:
        raise ServiceError(f"no {protocol.BATCH_PROMPT} service in this job")

    def utility(self, params: dict) -> float:
        raise ServiceError(f"no {protocol.UTILITY} service in this job")
