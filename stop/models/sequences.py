"""The engine's records: a cached prompt prefix, one sample being decoded, one request."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from stop.models.lookup import Drafter, SamplingParams


@dataclass
class Prefix:
    seq: int
    tokens: list[int]
    new_cells: int          # cells this prefix evaluated itself (not copied)
    used: float = field(default_factory=time.monotonic)
    busy: bool = False      # being evaluated: not evictable
    # The logits after the last token, so that the same prompt again evaluates nothing: a
    # re-evaluated last token would land in another KV cell, and attention sums its cells in
    # cell order, so even greedy replies could change in the last bits.
    logits: np.ndarray | None = None


@dataclass
class Sample:
    seq: int
    rng: np.random.Generator
    drafter: Drafter | None
    pos: int                # position of `pending`
    pending: int            # sampled, not yet in the KV cache
    pieces: bytearray = field(default_factory=bytearray)
    count: int = 0
    finish: str | None = None
    accept_rate: float = 1.0  # running mean of this sample's draft acceptance


@dataclass
class Request:
    tokens: list[int]
    n: int
    params: SamplingParams
    max_tokens: int
    stops: list[str]
    ignore_eos: bool
    seed: int
    lookup: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None
    prefix: Prefix | None = None
    todo: list[int] = field(default_factory=list)   # prompt tokens still to evaluate
    todo_pos: int = 0
    samples: list[Sample] = field(default_factory=list)
    evaluated: int = 0
    drafted: int = 0
    accepted: int = 0
    steps: int = 0
    t_submit: float = field(default_factory=time.monotonic)
    t_prompt: float = 0.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
