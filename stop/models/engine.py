"""The batched decoding engine: one loop that owns the model and serves every request at once.

Each step is one llama_decode over a batch mixing (a) the next token of every running sample,
with its lookup drafts behind it, and (b) a chunk of a newly arrived prompt. So a request that
arrives while others decode joins the running batch at the next step (continuous batching),
up to `max_samples` sequences, which are sized from the KV cells the context was given.

Prompts are cached as prefixes: every evaluated prompt stays in its own KV sequence until it is
evicted (least recently used, at most `max_prefixes`, or when the cells are needed). A new
prompt copies the longest cached common prefix (a metadata copy in the unified cache) and
evaluates only the rest; its n samples copy the finished prompt the same way.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np

from stop.models.cpu_share import CoreChooser
from stop.models.llama_runtime import LlamaRuntime
from stop.models.lookup import (
    Drafter,
    PromptIndex,
    SamplingParams,
    accept_or_resample,
    draw,
    target_distribution,
)
from stop.models.sequences import Prefix, Request, Sample, common_prefix


class EngineError(RuntimeError):
    """The model failed on a step; the request cannot be completed."""


class Engine:
    def __init__(self, model_path: str, *, n_ctx: int | None = None, n_batch: int = 256,
                 threads: int | None = None, max_samples: int | None = None,
                 max_prefixes: int = 6, draft_max: int = 3, lookup: bool = True) -> None:
        self.cores = CoreChooser(fixed=threads)
        max_samples = max_samples or 16
        self.rt = LlamaRuntime(model_path, n_ctx=n_ctx, n_batch=n_batch,
                               n_seq_max=max_samples + max_prefixes + 1,
                               threads=self.cores.choose())
        # A sample needs its own cells for what it writes; keep at least 512 each.
        self.max_samples = max(1, min(max_samples, self.rt.n_ctx // 512))
        self.max_prefixes = max_prefixes
        self.draft_max = draft_max if lookup else 0
        self.n_seqs = max_samples + max_prefixes + 1
        self.free_seqs = list(range(self.n_seqs))
        self.prefixes: list[Prefix] = []
        self.queue: deque[Request] = deque()
        self.running: list[Request] = []
        self.cv = threading.Condition()
        self.closed = False
        self.decode_s = self.step_s = 0.0  # time in llama_decode, and in whole steps
        self.loop = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.loop.start()

    # ------------------------------------------------------------------ public

    def chat(self, messages: list[dict], *, n: int = 1, temperature: float = 0.7,
             max_tokens: int = 256, seed: int | None = None, stop: list[str] | None = None,
             ignore_eos: bool = False, lookup: bool = True) -> dict:
        tokens, stops = self.rt.format(messages, stop)
        n = max(1, min(int(n), self.max_samples))
        room = self.rt.n_ctx - len(tokens)
        if room < 2 * n:
            raise ValueError(f"prompt of {len(tokens)} tokens does not fit the context of {self.rt.n_ctx}")
        req = Request(tokens=tokens, n=n, params=SamplingParams(temperature=float(temperature)),
                      max_tokens=max(1, min(int(max_tokens), room // n - self.draft_max - 1)),
                      stops=stops, ignore_eos=ignore_eos, lookup=lookup and self.draft_max > 0,
                      seed=int(seed) if seed is not None else int.from_bytes(os.urandom(4), "little"))
        with self.cv:
            if self.closed:
                raise EngineError("the engine is closed")
            self.queue.append(req)
            self.cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()
        self.loop.join(timeout=60)
        self.rt.close()

    def stats(self) -> dict:
        return {"n_ctx": self.rt.n_ctx, "max_samples": self.max_samples, "threads": self.rt.threads,
                "prefixes": [len(p.tokens) for p in self.prefixes], "running": len(self.running)}

    # ------------------------------------------------------------------ cells and slots

    def _reserved(self) -> int:
        cells = sum(p.new_cells for p in self.prefixes)
        for r in self.running:
            live = [s for s in r.samples if s.finish is None] if r.samples else [None] * r.n
            cells += len(r.todo) + len(live) * (r.max_tokens + self.draft_max + 1)
        return cells

    def _drop(self, p: Prefix) -> None:
        self.prefixes.remove(p)
        self.rt.seq_rm(p.seq)
        self.free_seqs.append(p.seq)

    def _evict_one(self, keep: Prefix | None = None) -> bool:
        """Drop the least recently used idle prefix other than `keep`; False if there is none."""
        idle = [p for p in self.prefixes if not p.busy and p is not keep]
        if not idle:
            return False
        self._drop(min(idle, key=lambda p: p.used))
        return True

    def _short(self, cells: int, seqs: int) -> bool:
        return self._reserved() + cells > self.rt.n_ctx or len(self.free_seqs) < seqs + 1

    def _admit(self) -> None:
        while self.queue:
            req = self.queue[0]
            if self.running and sum(r.n for r in self.running) + req.n > self.max_samples:
                return
            best = max(self.prefixes, key=lambda p: common_prefix(p.tokens, req.tokens), default=None)
            common = common_prefix(best.tokens, req.tokens) if best else 0
            if best is not None and best.logits is not None and common == len(req.tokens) \
                    == len(best.tokens):
                if self._short(req.n * (req.max_tokens + self.draft_max + 1), req.n - 1) \
                        and self.running:
                    return
                self.queue.popleft()
                best.used = time.monotonic()
                req.prefix = best
                self.running.append(req)
                continue
            common = min(common, len(req.tokens) - 1)
            need = (len(req.tokens) - common) + req.n * (req.max_tokens + self.draft_max + 1)

            while (self._short(need, req.n) or len(self.prefixes) >= self.max_prefixes) \
                    and self._evict_one(best):
                pass
            if self._short(need, req.n) and self.running:
                return  # joins when running requests have finished and freed their cells
            self.queue.popleft()
            seq = self.free_seqs.pop()
            if best is not None and common > 0:
                self.rt.seq_cp(best.seq, seq, 0, common)
                best.used = time.monotonic()
            else:
                common = 0
            req.prefix = Prefix(seq=seq, tokens=req.tokens[:common], new_cells=0, busy=True)
            self.prefixes.append(req.prefix)
            req.todo, req.todo_pos = req.tokens[common:], common
            self.running.append(req)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.closed and not self.queue and not self.running:
                    self.cv.wait()
                if self.closed:
                    for r in list(self.queue) + self.running:
                        r.error = EngineError("the engine was closed")
                        r.done.set()
                    return
            with self.cv:
                try:
                    self._admit()
                except Exception as e:  # the request at the head cannot be admitted: fail it
                    if self.queue and self.queue[0] not in self.running:
                        bad = self.queue.popleft()
                        bad.error = EngineError(f"{type(e).__name__}: {e}")
                        bad.done.set()
                    continue
            try:
                self._step()
            except Exception as e:  # a failed step leaves the cache unknown: start clean
                self._fail_all(e)

    def _fail_all(self, e: BaseException) -> None:
        self.rt.clear()
        self.free_seqs = list(range(self.n_seqs))
        self.prefixes = []
        for r in self.running:
            r.error = e if isinstance(e, EngineError) else EngineError(f"{type(e).__name__}: {e}")
            r.done.set()
        self.running = []

    def _step(self) -> None:
        t_step = time.perf_counter()
        try:
            self._step_inner()
        finally:
            self.step_s += time.perf_counter() - t_step
        with self.cv:  # after the timing, so a reply's decode share covers whole steps
            for r in list(self.running):
                if r.samples and all(s.finish is not None for s in r.samples):
                    self._finish(r)

    def _step_inner(self) -> None:
        self.rt.set_threads(self.cores.choose())
        items: list[tuple[int, int, int, bool]] = []
        plan: list[tuple[Request, Sample, list[int], int]] = []  # sample, drafts, first index
        live = sum(1 for r in self.running for s in r.samples if s.finish is None)
        # On this kind of CPU a step's cost grows almost linearly with its tokens, so a draft
        # token costs nearly what it saves: it pays only when it is likely to be kept, and the
        # more samples already share the step, the likelier it must be (measured: 43% kept
        # paid for one sample, 52% did not for six). Samples below the bar stop drafting and
        # try again after a while.
        bar = min(0.9, 0.3 + 0.1 * live)
        for r in self.running:
            for s in r.samples:
                if s.finish is not None:
                    continue
                room = r.max_tokens - s.count - 1
                drafts = []
                if s.drafter and s.accept_rate >= bar:
                    drafts = s.drafter.draft(min(self.draft_max, room))
                elif s.drafter:
                    s.accept_rate = min(1.0, s.accept_rate + 0.005)
                plan.append((r, s, drafts, len(items)))
                items.append((s.pending, s.pos, s.seq, True))
                items += [(d, s.pos + 1 + j, s.seq, True) for j, d in enumerate(drafts)]
                r.drafted += len(drafts)
        prompt_done: list[tuple[Request, int]] = []
        for r in self.running:
            if not r.samples and not r.todo and r.prefix is not None and r.prefix.logits is not None:
                self._start_samples(r, r.prefix.logits)  # the whole prompt was cached
            if not r.todo or len(items) >= self.rt.n_batch:
                continue
            chunk = r.todo[: self.rt.n_batch - len(items)]
            last = len(chunk) == len(r.todo)
            items += [(t, r.todo_pos + i, r.prefix.seq, last and i == len(chunk) - 1)
                      for i, t in enumerate(chunk)]
            if last:
                prompt_done.append((r, len(items) - 1))
            r.todo, r.todo_pos = r.todo[len(chunk):], r.todo_pos + len(chunk)
            r.evaluated += len(chunk)
            r.prefix.tokens = r.tokens[: r.todo_pos]
            r.prefix.new_cells += len(chunk)
        if items:
            t0 = time.perf_counter()
            rc = self.rt.decode(items)
            self.decode_s += time.perf_counter() - t0
            while rc == 1 and self._evict_one():  # no free KV slot: drop cached prefixes, retry
                rc = self.rt.decode(items)
            if rc != 0:
                raise EngineError(f"llama_decode returned {rc} (KV cache of {self.rt.n_ctx} cells full?)")
            for r in {id(r): r for r, _, _, _ in plan}.values():
                r.steps += 1
            for r, s, drafts, first in plan:
                self._advance(r, s, drafts, first)
            for r, idx in prompt_done:
                r.prefix.logits = self.rt.logits(idx).copy()
                self._start_samples(r, r.prefix.logits)

    def _start_samples(self, r: Request, logits: np.ndarray) -> None:
        r.t_prompt = time.monotonic()
        r.prefix.busy = False
        r.prefix.used = time.monotonic()
        # Prefixes wholly contained in this one are now redundant.
        for p in list(self.prefixes):
            if p is not r.prefix and not p.busy and len(p.tokens) <= len(r.tokens) \
                    and r.tokens[: len(p.tokens)] == p.tokens:
                self._drop(p)
        ids, probs = target_distribution(logits, r.params)
        index = PromptIndex(r.tokens) if r.lookup else None
        for k in range(r.n):
            seq = self.free_seqs.pop()
            self.rt.seq_cp(r.prefix.seq, seq, -1, -1)
            rng = np.random.default_rng(r.seed + k)
            s = Sample(seq=seq, rng=rng, drafter=Drafter(index) if index else None,
                       pos=len(r.tokens), pending=draw(ids, probs, rng))
            r.samples.append(s)
            if s.drafter:
                s.drafter.append(s.pending)
            self._emit(r, s, s.pending)
            if s.finish is not None:
                self._release(s)
        while len(self.prefixes) > self.max_prefixes and self._evict_one():
            pass

    def _advance(self, r: Request, s: Sample, drafts: list[int], first: int) -> None:
        """Verify the drafts of one sample against the step's logits, emit what is kept."""
        kept = 0
        for j in range(len(drafts) + 1):
            ids, probs = target_distribution(self.rt.logits(first + j), r.params)
            if j < len(drafts):
                tok, ok = accept_or_resample(ids, probs, drafts[j], s.rng)
            else:
                tok, ok = draw(ids, probs, s.rng), False
            r.accepted += ok
            kept += ok
            if s.drafter:
                s.drafter.append(tok)
            s.pos += 1
            s.pending = tok
            self._emit(r, s, tok)
            if s.finish is not None or not ok:
                break
        if drafts:
            s.accept_rate = 0.7 * s.accept_rate + 0.3 * kept / len(drafts)
        # Rejected drafts left cells after the kept tokens: drop them.
        self.rt.seq_rm(s.seq, s.pos, -1)
        if s.finish is not None:
            self._release(s)

    def _release(self, s: Sample) -> None:
        self.rt.seq_rm(s.seq)
        self.free_seqs.append(s.seq)

    def _emit(self, r: Request, s: Sample, tok: int) -> None:
        """Account for the token just sampled; decide whether the sample is finished."""
        if s.finish is not None:
            return
        s.count += 1
        if not r.ignore_eos and self.rt.is_eog(tok):
            s.finish = "stop"
            return
        s.pieces += self.rt.piece(tok)
        if r.stops and not r.ignore_eos and any(
                x.encode() in s.pieces[-64 - len(x):] for x in r.stops):
            s.finish = "stop"
        elif s.count >= r.max_tokens:
            s.finish = "length"

    def _finish(self, r: Request) -> None:
        self.running.remove(r)
        texts = []
        for s in r.samples:
            text = s.pieces.decode("utf-8", errors="ignore")
            for x in r.stops:
                if x in text:
                    text = text[: text.index(x)]
            texts.append(text)
        now = time.monotonic()
        r.result = {
            "texts": texts, "finish": [s.finish or "length" for s in r.samples],
            "prompt_tokens": len(r.tokens), "completion_tokens": sum(s.count for s in r.samples),
            "prompt_evaluated": r.evaluated, "prompt_s": r.t_prompt - r.t_submit,
            "generate_s": now - r.t_prompt, "steps": r.steps, "drafted": r.drafted,
            "accepted": r.accepted, "threads": self.rt.threads,
            "decode_share": round(self.decode_s / self.step_s, 3) if self.step_s else None,
        }
        r.done.set()
