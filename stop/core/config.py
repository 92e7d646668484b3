"""The resolved settings of one self-improvement run, with the two budget profiles.

`paper` is STOP's setting: each improver run gets 4 language-model calls of 6 responses and 25
utility calls; the meta-utility runs a candidate improver 5 times and may itself be called 25
times by the improver being improved. `tiny` keeps the same structure with budgets small enough
that one round on the embedded 1.5B model finishes in minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from stop.core.budget import PAPER, Budget
from stop.errors import StopError
from stop.sandbox.runtimes import RUNTIMES


class ConfigError(StopError):
    """A run setting is out of range or unknown."""


# What each profile sets; anything given on the command line wins over the profile.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        "rounds": 4,
        "n_tests": 5,
        "lm_budget": PAPER.lm_calls,
        "max_responses_per_call": PAPER.responses_per_call,
        "utility_budget": PAPER.utility_calls,
        "meta_lm_budget": PAPER.lm_calls,
        "meta_max_responses_per_call": PAPER.responses_per_call,
        "meta_utility_budget": PAPER.utility_calls,
        "max_tokens": PAPER.max_tokens,
        "improver_wall_s": PAPER.wall_s,
        "self_improve_wall_s": 86400.0,
    },
    "tiny": {
        "rounds": 1,
        "n_tests": 1,
        "lm_budget": 1,
        "max_responses_per_call": 2,
        "utility_budget": 3,
        "meta_lm_budget": 1,
        "meta_max_responses_per_call": 2,
        "meta_utility_budget": 3,
        "max_tokens": 768,
        "improver_wall_s": 900.0,
        "self_improve_wall_s": 3600.0,
    },
}

# Sized for `stop experiment improve` on the embedded model and 2 cores: see docs/loop.md.
PROFILES["local"] = {
    "rounds": 1,
    "n_tests": 3,
    "lm_budget": 2,
    "max_responses_per_call": 2,
    "utility_budget": 5,
    "meta_lm_budget": 1,
    "meta_max_responses_per_call": 2,
    "meta_utility_budget": 3,
    "max_tokens": 768,
    "improver_wall_s": 1800.0,
    "self_improve_wall_s": 10800.0,
}

_TINY = PROFILES["tiny"]

PROFILE_HELP = {
    "n_tests": "improver runs averaged by one meta-utility evaluation",
    "lm_budget": "model calls per improver run on the base task",
    "max_responses_per_call": "responses per model call on the base task",
    "utility_budget": "utility calls per improver run on the base task",
    "meta_lm_budget": "model calls of the improver improving itself",
    "meta_max_responses_per_call": "responses per call when the improver improves itself",
    "meta_utility_budget": "meta-utility calls allowed to the improver improving itself",
    "max_tokens": "completion tokens per response",
    "improver_wall_s": "wall-clock limit of one improver run on the base task (s)",
    "self_improve_wall_s": "wall-clock limit of the improver improving itself (s)",
}


@dataclass
class RunConfig:
    """Everything a run needs to be repeated; stored as the run's config.json."""

    task: str = "parity_noise"
    model: str | None = None
    api_base: str | None = None
    profile: str = "tiny"
    # The profile's settings; their defaults are the tiny profile's, written once above.
    rounds: int = _TINY["rounds"]
    n_tests: int = _TINY["n_tests"]
    lm_budget: int = _TINY["lm_budget"]
    max_responses_per_call: int = _TINY["max_responses_per_call"]
    utility_budget: int = _TINY["utility_budget"]
    meta_lm_budget: int = _TINY["meta_lm_budget"]
    meta_max_responses_per_call: int = _TINY["meta_max_responses_per_call"]
    meta_utility_budget: int = _TINY["meta_utility_budget"]
    max_tokens: int = _TINY["max_tokens"]
    improver_wall_s: float = _TINY["improver_wall_s"]
    self_improve_wall_s: float = _TINY["self_improve_wall_s"]
    jobs: int = 2
    seed: int = 0
    sandbox: str = "docker"
    sandbox_runtime: str = "runc"  # the Docker backend's OCI runtime: runc, or runsc (gVisor)
    executor: str = "local"  # where the sandboxes run: local, or ray (stop.cluster)
    margin: float = 0.0
    alpha: float | None = 0.05
    seed_improver: str = "meta_optimization"
    # Per-run spending caps (None: no cap); a capped run stops cleanly and resumes with a higher one.
    max_cost_usd: float | None = None
    max_tokens_total: int | None = None
    # Seconds one model request may take; None: STOP_MODEL_TIMEOUT_S, else 600 (embedded: 3600).
    model_timeout_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile: str = "tiny", **overrides: Any) -> RunConfig:
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        values = {**PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None}}
        cfg = cls(profile=profile, **values)
        cfg.validate()
        return cfg

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError("run config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"run config has unknown settings: {', '.join(unknown)}")
        try:
            cfg = cls(**data)
        except TypeError as e:
            raise ConfigError(f"run config is malformed: {e}") from None
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def base_budget(self) -> Budget:
        """Each improver run on the base task: the meta-utility's test runs, transfer trials."""
        return Budget.of_run(self.to_dict())

    def self_improvement_budget(self) -> Budget:
        """The improver improving itself, once per round (its utility is the meta-utility)."""
        return Budget(lm_calls=self.meta_lm_budget,
                      responses_per_call=self.meta_max_responses_per_call,
                      utility_calls=self.meta_utility_budget, max_tokens=self.max_tokens,
                      wall_s=self.self_improve_wall_s)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def validate(self) -> None:
        def positive_int(name: str, lo: int = 1) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")

        for name in ("n_tests", "lm_budget", "max_responses_per_call", "utility_budget",
                     "meta_lm_budget", "meta_max_responses_per_call", "meta_utility_budget",
                     "max_tokens", "jobs"):
            positive_int(name)
        positive_int("rounds", 0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        def number(name: str, what: str, *, optional: bool = False) -> None:
            # NaN and Infinity parse as JSON numbers (`--set improver_wall_s=NaN`) and would
            # pass `v <= 0`; a run built on them fails later, so they are refused here.
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v) or v <= 0:
                raise ConfigError(f"{name} must be {what}, got {v!r}")

        for name in ("improver_wall_s", "self_improve_wall_s"):
            number(name, "a positive number of seconds")
        number("model_timeout_s", "a positive number of seconds or null", optional=True)
        number("max_cost_usd", "a positive number of US dollars or null", optional=True)
        if self.max_tokens_total is not None:
            positive_int("max_tokens_total")
        if not isinstance(self.margin, int | float) or not -1.0 <= self.margin <= 1.0:
            raise ConfigError(f"margin must be a number between -1 and 1, got {self.margin!r}")
        if self.alpha is not None and (not isinstance(self.alpha, int | float)
                                       or not 0.0 < self.alpha < 1.0):
            raise ConfigError(f"alpha must be between 0 and 1 (exclusive) or null, got {self.alpha!r}")
        if self.sandbox not in ("docker", "process"):
            raise ConfigError(f"sandbox must be docker or process, got {self.sandbox!r}")
        if self.sandbox_runtime not in RUNTIMES:
            raise ConfigError(f"sandbox_runtime must be {' or '.join(RUNTIMES)}, "
                              f"got {self.sandbox_runtime!r}")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor must be local or ray, got {self.executor!r}")
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError("task must be a task name")
        if self.seed_improver not in ("meta_optimization", "sandbox"):
            raise ConfigError(f"seed_improver must be meta_optimization or sandbox, got {self.seed_improver!r}")


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def profile_table() -> str:
    """The profiles side by side, for `stop run --help` and the docs."""
    names = ("tiny", "local", "paper")
    rows = [f"{'setting':<30} " + " ".join(f"{n:>8}" for n in names)]
    for key, what in [*PROFILE_HELP.items(), ("rounds", "self-improvement rounds")]:
        rows.append(f"{key:<30} " + " ".join(f"{PROFILES[n][key]!s:>8}" for n in names)
                    + f"  {what}")
    return "\n".join(rows)
