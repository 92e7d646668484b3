"""What an improve experiment will spend, computed before anything is spent (`--dry-run`).

Counts come from the budgets alone. Two columns: `seed-like`, where every improver behaves
like the seed (one batch of min(responses, utility calls - 1) samples, each scored once), and
`at most`, where every improver uses its whole model and utility budget. The baseline always
spends its whole model budget. Tokens are estimated: prompt tokens from the length of the text
the seed prompt carries (four characters a token), completion tokens at the `max_tokens` cap
for every response. Cost is litellm's price for the model; a local or scripted model costs $0;
a model litellm has no price for is "unknown", never $0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stop.core.config import RunConfig
from stop.experiments.improve import ImproveConfig, baseline_source
from stop.models import LiteLLMModel, resolve_model
from stop.models.base import estimate_tokens
from stop.models.litellm_model import _import_litellm
from stop.runs.store import Run
from stop.runs.summary import finished_rounds
from stop.tasks.loader import load_task


@dataclass
class Spend:
    calls: int = 0
    responses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    containers: int = 0

    def add(self, other: Spend, times: int = 1) -> Spend:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + times * getattr(other, k))
        return self


def _improver_run(calls: int, responses: int, utility_calls: int, prompt: int, max_tokens: int,
                  scorings_after: int) -> Spend:
    """One improver run: its model calls, one container for it, one per utility call, and the
    scorings of what it returned (val and test in a meta-utility run or a trial)."""
    return Spend(calls, responses, calls * prompt, responses * max_tokens,
                 1 + utility_calls + scorings_after)


def plan_run(cfg: RunConfig, trials: int, *, rounds_left: int | None = None) -> dict[str, Spend]:
    """{phase: (seed-like, at most)} of one run: its rounds and the three arms' trials."""
    base = load_task(cfg.task)
    seed = load_task(cfg.seed_improver)
    p_base = estimate_tokens(seed.seed_source + base.seed_source + base.description)
    p_meta = estimate_tokens(seed.seed_source * 2 + seed.description)
    n_seed = min(cfg.max_responses_per_call, max(1, cfg.utility_budget - 1))
    seed_run = _improver_run(1, n_seed, 1 + n_seed, p_base, cfg.max_tokens, 2)
    full_run = _improver_run(cfg.lm_budget, cfg.lm_budget * cfg.max_responses_per_call,
                             cfg.utility_budget, p_base, cfg.max_tokens, 2)
    base_resp = cfg.lm_budget * cfg.max_responses_per_call
    baseline = _improver_run(cfg.lm_budget, base_resp, min(cfg.utility_budget, 1 + base_resp),
                             p_base, cfg.max_tokens, 2)
    m_seed = min(cfg.meta_max_responses_per_call, max(1, cfg.meta_utility_budget - 1))
    rounds = cfg.rounds if rounds_left is None else rounds_left
    low, high = Spend(), Spend()
    for _ in range(rounds):
        low.add(_improver_run(1, m_seed, 0, p_meta, cfg.max_tokens, 0))
        low.add(seed_run, (1 + m_seed + 2) * cfg.n_tests)  # Û calls of the search, re-evaluation
        high.add(_improver_run(cfg.meta_lm_budget,
                               cfg.meta_lm_budget * cfg.meta_max_responses_per_call, 0, p_meta,
                               cfg.max_tokens, 0))
        high.add(full_run, (cfg.meta_utility_budget + 2) * cfg.n_tests)
    return {"rounds": (low, high),
            "I0": (Spend().add(seed_run, trials), Spend().add(seed_run, trials)),
            "baseline": (Spend().add(baseline, trials), Spend().add(baseline, trials)),
            "IT": (Spend().add(seed_run, trials), Spend().add(full_run, trials))}


def price(model: Any, prompt_tokens: int, completion_tokens: int) -> float | None:
    """litellm's price of that many tokens for `model`; 0 for a free model; None if unknown."""
    if isinstance(model, LiteLLMModel) and not model.free:
        litellm = _import_litellm()
        try:
            a, b = litellm.cost_per_token(model=model.litellm_name, prompt_tokens=prompt_tokens,
                                          completion_tokens=completion_tokens)
        except Exception:  # litellm raises its own "not mapped" error for unknown models
            return None
        return float(a) + float(b)
    return 0.0 if model.price_known() else None


def plan(cfg: ImproveConfig, runs: list[Run] | None = None) -> dict[str, Any]:
    """The dry run's numbers for the whole experiment, by phase, both columns, with cost."""
    runs = runs or []
    configs = ([(RunConfig.from_dict(r.config()), len(finished_rounds(r))) for r in runs] or
               [(cfg.run_config(k, "dry-run"), 0) for k in range(cfg.runs)])
    phases: dict[str, tuple[Spend, Spend]] = {}
    for rcfg, done in configs:
        left = 0 if cfg.from_runs else max(0, rcfg.rounds - done)
        for phase, (lo, hi) in plan_run(rcfg, cfg.trials, rounds_left=left).items():
            a, b = phases.setdefault(phase, (Spend(), Spend()))
            a.add(lo)
            b.add(hi)
    if cfg.judge:
        proposals = sum((r.meta_utility_budget + 1) * r.rounds for r, _ in configs)
        one = Spend(1, 1, estimate_tokens(baseline_source()) * 2, 64, 0)
        phases["judge"] = (Spend(), Spend().add(one, proposals))
    model = resolve_model(cfg.model, api_base=cfg.api_base)
    judge = resolve_model(cfg.judge) if cfg.judge else None
    try:
        rows = []
        for phase, (lo, hi) in phases.items():
            m = judge if phase == "judge" else model
            rows.append({"phase": phase, "seed_like": vars(lo), "at_most": vars(hi),
                         "cost_seed_like": price(m, lo.prompt_tokens, lo.completion_tokens),
                         "cost_at_most": price(m, hi.prompt_tokens, hi.completion_tokens)})
    finally:
        model.close()
        if judge is not None:
            judge.close()
    total = {}
    for col in ("seed_like", "at_most"):
        total[col] = {k: sum(r[col][k] for r in rows) for k in vars(Spend())}
        costs = [r[f"cost_{col}"] for r in rows]
        total[f"cost_{col}"] = None if any(c is None for c in costs) else sum(costs)
    return {"model": cfg.model or "embedded", "runs": len(configs), "trials": cfg.trials,
            "rows": rows, "total": total}


def format_plan(p: dict[str, Any]) -> str:
    def cost(x: float | None) -> str:
        return "unknown" if x is None else f"${x:.4f}"

    out = [f"dry run: {p['runs']} run(s), {p['trials']} trial(s) per arm, model {p['model']}; "
           f"nothing is spent", "",
           f"{'phase':<10} {'column':<10} {'calls':>7} {'responses':>9} {'tokens (est.)':>14} "
           f"{'cost':>10} {'containers':>10}"]
    for r in [*p["rows"], {"phase": "total", **p["total"]}]:
        for col, name in (("seed_like", "seed-like"), ("at_most", "at most")):
            s = r[col]
            out.append(f"{r['phase']:<10} {name:<10} {s['calls']:>7,} {s['responses']:>9,} "
                       f"{s['prompt_tokens'] + s['completion_tokens']:>14,} "
                       f"{cost(r[f'cost_{col}']):>10} {s['containers']:>10,}")
    out.append("tokens: prompt estimated from its text, completion at the max_tokens cap; "
               "containers: one per improver run and one per solution scoring")
    return "\n".join(out)
