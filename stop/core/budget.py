"""What one improver run may use, with the STOP paper's budgets as the defaults.

The paper gives each improver run 4 language-model calls of up to 6 responses and 25 utility
calls. Task folders, the `paper` run profile, the meta-utility and transfer trials all start
from `PAPER`; anything they set themselves wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    """One improver run's allowance: model calls, responses per call, utility calls, tokens per
    response, and its wall-clock limit (seconds)."""

    lm_calls: int = 4
    responses_per_call: int = 6
    utility_calls: int = 25
    max_tokens: int = 1024
    wall_s: float = 3600.0

    @classmethod
    def of_run(cls, config: Mapping[str, Any]) -> Budget:
        """The base-task budget of a run from its config.json (a setting it lacks: the paper's)."""
        return cls(lm_calls=int(config.get("lm_budget", PAPER.lm_calls)),
                   responses_per_call=int(config.get("max_responses_per_call",
                                                     PAPER.responses_per_call)),
                   utility_calls=int(config.get("utility_budget", PAPER.utility_calls)),
                   max_tokens=int(config.get("max_tokens", PAPER.max_tokens)),
                   wall_s=float(config.get("improver_wall_s", PAPER.wall_s)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PAPER = Budget()
