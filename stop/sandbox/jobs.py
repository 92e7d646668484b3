"""The jobs the host sends into the sandbox, one dataclass per kind, with their wire form.

`to_wire()` is the job line's content before the execution adds its nonce and output limit; the
harness reads exactly these keys (sandbox/harness.py). Key order is part of the form: the job
line of a given job is the same bytes from one release to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from stop.container import protocol
from stop.container.codec import encode


@dataclass(frozen=True)
class SolveJob:
    """Call the solution's `entry(*args)` once per argument list in `calls`.

    per_call_s: each call's own deadline inside the harness (0: none; the host's wall clock still
    applies). The arguments cross as codec values, so their types arrive intact.
    """

    kind: ClassVar[str] = protocol.SOLVE
    source: str
    calls: list[list[Any]] = field(default_factory=list)
    entry: str = "algorithm"
    per_call_s: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "entry": self.entry,
                "calls": encode(self.calls), "per_call_s": self.per_call_s}


@dataclass(frozen=True, kw_only=True)
class ImproveJob:
    """Call the improver's `entry(initial_solution, utility, language_model)` once.

    The budgets here are what the improver's stubs show it (`utility.budget`,
    `language_model.budget`); the host's services count and enforce the real ones.
    use_sandbox_param: the utility stub takes a `use_sandbox` flag (a honeypot: never honoured).
    """

    kind: ClassVar[str] = protocol.IMPROVE
    source: str
    initial_solution: str
    description: str
    utility_budget: int
    lm_budget: int
    max_responses_per_call: int
    use_sandbox_param: bool = False
    entry: str = "improve_algorithm"

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "entry": self.entry,
                "initial_solution": self.initial_solution,
                "utility": {"description": self.description, "budget": self.utility_budget,
                            "use_sandbox_param": self.use_sandbox_param},
                "language_model": {"budget": self.lm_budget,
                                   "max_responses_per_call": self.max_responses_per_call}}


Job = SolveJob | ImproveJob
