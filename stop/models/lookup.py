"""Sampling, lookup (n-gram) drafting and the exact accept-or-resample rule for drafted tokens.

A rewrite copies much of the program it improves, so the tokens that followed the last earlier
occurrence of the current n-gram (in the prompt or in the text written so far) are a cheap guess
at what comes next. The engine feeds such draft tokens in the same batch as the real one and
checks them against the model's own distribution afterwards.

Exactness: a draft token d is deterministic given the history, so accepting it with probability
p(d) and otherwise drawing from p with d removed and renormalised gives P(d) = p(d) and
P(x) = (1 - p(d)) * p(x) / (1 - p(d)) = p(x) for every other x: the replies are distributed as
without drafts. At temperature 0, p is a point mass and the rule keeps exactly the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """The filters of the sampler, applied in llama.cpp's order: top-k, top-p, min-p, temperature."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05


def target_distribution(logits: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) that the next token is drawn from; greedy is one token with p=1."""
    if params.temperature <= 0:
        return np.array([int(np.argmax(logits))]), np.ones(1)
    k = max(1, min(params.top_k, logits.shape[0]))
    ids = np.argpartition(logits, -k)[-k:]
    top = logits[ids].astype(np.float64)
    order = np.argsort(-top, kind="stable")
    ids, top = ids[order], top[order]
    # top-p and min-p judge the untempered softmax, as llama.cpp's chain does (temp comes last).
    p = np.exp(top - top[0])
    p /= p.sum()
    keep = min(k, int(np.searchsorted(np.cumsum(p), params.top_p)) + 1)
    keep = max(1, int(np.count_nonzero(p[:keep] >= params.min_p * p[0])))
    ids, top = ids[:keep], top[:keep]
    q = np.exp((top - top[0]) / params.temperature)
    return ids, q / q.sum()


def draw(ids: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token from the distribution (ids, probs); probs need not sum to one."""
    if len(ids) == 1:
        return int(ids[0])
    cum = np.cumsum(probs)
    j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(ids[min(j, len(ids) - 1)])


def accept_or_resample(ids: np.ndarray, probs: np.ndarray, draft: int,
                       rng: np.random.Generator) -> tuple[int, bool]:
    """(token, accepted): keep `draft` with probability p(draft), else draw from the rest of p."""
    hit = np.flatnonzero(ids == draft)
    p_draft = float(probs[hit[0]]) if len(hit) else 0.0
    if p_draft >= 1.0 or (p_draft > 0.0 and rng.random() < p_draft):
        return draft, True
    if not len(hit):
        return draw(ids, probs, rng), False
    rest = probs.copy()
    rest[hit[0]] = 0.0
    return draw(ids, rest, rng), False


class PromptIndex:
    """For each n-gram (n_min..n_max tokens) of a prompt, the position of the token after its
    last occurrence. Built once per request and shared by its samples."""

    def __init__(self, tokens: Sequence[int], n_min: int = 2, n_max: int = 4) -> None:
        self.tokens = list(tokens)
        self.n_min, self.n_max = n_min, n_max
        self.follow: dict[tuple[int, ...], int] = {}
        t = self.tokens
        for end in range(1, len(t)):
            for n in range(n_min, min(n_max, end) + 1):
                self.follow[tuple(t[end - n:end])] = end


class Drafter:
    """Drafts for one sample: the continuation of the longest n-gram match, newest text first."""

    def __init__(self, prompt: PromptIndex) -> None:
        self.prompt = prompt
        self.hist = list(prompt.tokens)
        self.own: dict[tuple[int, ...], int] = {}  # n-grams that end in the generated text

    def append(self, tok: int) -> None:
        h = self.hist
        end = len(h)
        h.append(tok)
        # The n-grams ending just before `tok` now have a known follower: `tok` at `end`.
        for n in range(self.prompt.n_min, min(self.prompt.n_max, end) + 1):
            self.own[tuple(h[end - n:end])] = end

    def draft(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the current suffix."""
        h = self.hist
        if k <= 0:
            return []
        for n in range(min(self.prompt.n_max, len(h)), self.prompt.n_min - 1, -1):
            key = tuple(h[-n:])
            at = self.own.get(key)
            if at is None:
                at = self.prompt.follow.get(key)
            if at is not None and at < len(h):
                return h[at:at + k]
        return []
