"""The host-side gateway every language-model call goes through, and STOP's facade on top.

Trust: improvers run in containers and reach the model only through the bridge, which calls a
host-side `LanguageModel`. Every counter here (calls per improver run, tokens and cost per run)
lives in this process, so nothing an improver does to its own stub object changes them.

A call's key is sha256 of the canonical request, the model's name and `scope#index` (the
index counts calls made in that scope). Replies are looked up, in order, in the recorded
replies of the run being resumed or replayed, then in the on-disk cache, and only then asked
of the model. Every call, served or fresh, is logged as a `model_call` event with its texts,
so any run can be replayed offline. A reply with fewer texts than asked for is a model error
(retried, then reported): it is never logged as a call, cached, or served.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

from stop.errors import StopError
from stop.fsutil import write_atomic
from stop.models.base import Model, ModelError, ModelReply, ModelRequest, check_batch_args
from stop.models.caps import SpendingCaps
from stop.paths import cache_dir as default_cache_dir
from stop.runs.recorders import Recorder


class BudgetExceeded(StopError):
    """An improver run's language-model call budget is spent (the improver sees this)."""


def request_key(req: ModelRequest, model_name: str, scope: str, index: int) -> str:
    blob = json.dumps({"request": req.canonical(), "model": model_name,
                       "scope": f"{scope}#{index}"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _complete_entry(entry: Any, n: int) -> bool:
    """A recorded or cached reply that can be served: at least `n` texts, all strings."""
    texts = entry.get("texts") if isinstance(entry, dict) else None
    return isinstance(texts, list) and len(texts) >= max(n, 1) and all(isinstance(t, str)
                                                                        for t in texts)


class ResponseCache:
    """One JSON file per key under a folder; written atomically, so a crash leaves no torn entry."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str, n: int = 1) -> dict | None:
        """The entry of `key` if it holds `n` texts; a short one (an old empty reply) is a miss."""
        try:
            data = json.loads(self._path(key).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return data if _complete_entry(data, n) else None

    def put(self, key: str, entry: dict) -> None:
        write_atomic(self._path(key), json.dumps(entry, separators=(",", ":")))


class Gateway:
    """Budgets, retries, cache, replay and logging around one Model. Thread-safe.

    `caps`: the run's spending ledger, shared by its gateways; without it `max_tokens_total`
    and `max_cost_usd` cap this gateway alone. A cost cap on a model of unknown price is
    refused here, before any call. `max_retry_after_s` bounds a server's Retry-After: a longer
    wait asked for ends the call at once instead of sleeping on it.
    """

    def __init__(self, model: Model, *, recorder: Recorder, cache_dir: Path | str | None = None,
                 caps: SpendingCaps | None = None, max_tokens_total: int | None = None,
                 max_cost_usd: float | None = None, recorded: dict[str, dict] | None = None,
                 retries: int = 4, backoff_s: float = 1.0, max_retry_after_s: float = 60.0,
                 use_cache: bool | None = None) -> None:
        self.model = model
        self.recorder = recorder
        self.caps = caps if caps is not None else SpendingCaps(max_tokens_total, max_cost_usd)
        self.caps.require_price(model)
        self.recorded = dict(model.recorded if recorded is None else recorded)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.key_name = model.key_name
        if use_cache is None:
            use_cache = model.cacheable
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "lm-cache"
        self.cache = ResponseCache(root) if use_cache else None
        self.tokens_used = 0
        self.cost_usd: float | None = 0.0  # None once a reply's price was unknown
        self.calls = 0
        self._index: dict[str, int] = {}
        self._lock = threading.Lock()

    def _next_index(self, scope: str) -> int:
        with self._lock:
            i = self._index.get(scope, 0)
            self._index[scope] = i + 1
            return i

    def complete(self, req: ModelRequest, *, scope: str) -> ModelReply:
        index = self._next_index(scope)
        key = request_key(req, self.key_name, scope, index)
        served = self.recorded.get(key)
        if not _complete_entry(served, req.n):
            served = self.cache.get(key, req.n) if self.cache is not None else None
        if served is not None:
            reply = ModelReply(texts=list(served["texts"])[: max(req.n, 1)],
                               prompt_tokens=int(served.get("prompt_tokens", 0)),
                               completion_tokens=int(served.get("completion_tokens", 0)),
                               model=served.get("model", self.key_name), cached=True)
            return self._log(reply, req, scope, index, key, cost=0.0)
        if self.model.recorded_only:
            raise ModelError(f"{self.model.name} has no recorded reply for key {key[:16]} "
                             f"(scope {scope}#{index})")
        self.caps.check()
        reply = self._call_with_retries(req, scope, index, key)
        if len(reply.texts) > req.n:
            reply.texts = reply.texts[: req.n]
        with self._lock:
            self.tokens_used += reply.prompt_tokens + reply.completion_tokens
            self.cost_usd = None if self.cost_usd is None or reply.cost_usd is None \
                else self.cost_usd + reply.cost_usd
            self.calls += 1
        if self.cache is not None:
            self.cache.put(key, {"texts": reply.texts, "model": reply.model or self.key_name,
                                 "prompt_tokens": reply.prompt_tokens,
                                 "completion_tokens": reply.completion_tokens,
                                 "cost_usd": reply.cost_usd, "request": req.canonical(),
                                 "scope": f"{scope}#{index}", "ts": round(time.time(), 3)})
        return self._log(reply, req, scope, index, key, cost=reply.cost_usd)

    def _ask(self, req: ModelRequest) -> ModelReply:
        """One answer of the model, charged to the run; a short one is a retryable error."""
        reply = self.model.complete(req)
        self.caps.charge(reply)
        want = max(req.n, 1)
        if len(reply.texts) < want or not all(isinstance(t, str) for t in reply.texts):
            spent = {"prompt_tokens": reply.prompt_tokens,
                     "completion_tokens": reply.completion_tokens, "cost_usd": reply.cost_usd}
            raise _ShortReply(f"model {self.model.name} returned {len(reply.texts)} of {want} "
                              f"replies asked for", spent)
        return reply

    def _call_with_retries(self, req: ModelRequest, scope: str, index: int, key: str) -> ModelReply:
        attempt = 0
        while True:
            try:
                return self._ask(req)
            except ModelError as e:
                spent = e.spent if isinstance(e, _ShortReply) else {}
                wait = e.retry_after_s
                too_long = wait is not None and wait > self.max_retry_after_s
                if not e.retryable or attempt >= self.retries or too_long:
                    self.recorder.record("model_error", scope=scope, call_index=index, key=key,
                                         model=self.model.name, error=str(e), attempts=attempt + 1,
                                         **spent)
                    if too_long:
                        raise ModelError(f"{e}: the server asks to wait {wait:.0f} s, longer than "
                                         f"the {self.max_retry_after_s:.0f} s this waits; try "
                                         f"again later", status=e.status) from e
                    if e.retryable:
                        raise ModelError(f"{e} (gave up after {attempt + 1} attempts)",
                                         status=e.status) from e
                    raise
                delay = min(30.0, self.backoff_s * (2 ** attempt)) * (0.5 + random.random() / 2)
                if wait is not None:  # the server said when: no sooner
                    delay = max(delay, wait)
                self.recorder.record("model_retry", scope=scope, call_index=index, key=key,
                                     error=str(e), attempt=attempt + 1, delay_s=round(delay, 3),
                                     **spent)
                attempt += 1
                time.sleep(delay)

    def _log(self, reply: ModelReply, req: ModelRequest, scope: str, index: int, key: str,
             cost: float | None) -> ModelReply:
        self.recorder.record(
            "model_call", scope=scope, call_index=index, key=key, model=reply.model or self.key_name,
            n=req.n, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            cost_usd=cost, latency_s=round(reply.latency_s, 3), cached=reply.cached,
            texts=reply.texts,
        )
        return reply

    def close(self) -> None:
        self.model.close()


class _ShortReply(ModelError):
    """Fewer texts than asked for; carries what the reply cost, for the log and the caps."""

    def __init__(self, message: str, spent: dict[str, Any]) -> None:
        super().__init__(message, retryable=True)
        self.spent = spent


class LanguageModel:
    """STOP's `language_model` object, host side: one per improver run, with its own budget.

    A call counts once whatever its batch size; a batch longer than `max_responses_per_call`
    is cut to that size (and the cut is logged). Identical messages in a batch go to the model
    as one request for several samples, so the prompt is processed once.
    """

    def __init__(self, gateway: Gateway, *, budget: int = 4, max_responses_per_call: int = 6,
                 scope: str, max_tokens: int = 1024) -> None:
        self.gateway = gateway
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call
        self.scope = scope
        self.max_tokens = max_tokens
        self.calls_used = 0
        self._lock = threading.Lock()

    def prompt(self, expertise: str, message: str, n_responses: int = 1,
               temperature: float = 0.7) -> list[str]:
        if isinstance(n_responses, bool) or not isinstance(n_responses, int) or n_responses < 1:
            raise ModelError(f"n_responses must be a positive integer, got {n_responses!r}")
        return self.batch_prompt(expertise, [message] * n_responses, temperature)

    def batch_prompt(self, expertise: str, messages: list[str],
                     temperature: float = 0.7) -> list[str]:
        if isinstance(messages, str):
            messages = [messages]
        check_batch_args(expertise, messages, temperature)
        with self._lock:
            if self.calls_used >= self.budget:
                raise BudgetExceeded(
                    f"language-model budget exhausted: {self.calls_used} of {self.budget} calls used")
            self.calls_used += 1
            call = self.calls_used
        messages = list(messages)
        if len(messages) > self.max_responses_per_call:
            self.gateway.recorder.record("model_batch_truncated", scope=self.scope, call=call,
                                         requested=len(messages),
                                         allowed=self.max_responses_per_call)
            messages = messages[: self.max_responses_per_call]
        if not messages:
            return []
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(messages):
            groups.setdefault(m, []).append(i)
        out: list[str] = [""] * len(messages)
        for message, positions in groups.items():
            chat: list[dict[str, Any]] = []
            if expertise:
                chat.append({"role": "system", "content": expertise})
            chat.append({"role": "user", "content": message})
            req = ModelRequest(messages=chat, n=len(positions), temperature=float(temperature),
                               max_tokens=self.max_tokens)
            reply = self.gateway.complete(req, scope=self.scope)
            texts = list(reply.texts) + [""] * (len(positions) - len(reply.texts))
            for pos, text in zip(positions, texts, strict=False):
                out[pos] = text
        return out
