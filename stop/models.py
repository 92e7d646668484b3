"""Language-model backends behind one small protocol.

`resolve_model(spec)` turns a user's model string into a `Model`:

- None or "embedded": the local Qwen2.5-Coder-1.5B-Instruct GGUF, served on 127.0.0.1;
- "smollm2": the small SmolLM2-135M smoke model, served the same way;
- "scripted:FILE": replies read from a JSON file (tests and debugging);
- "replay:RUN": a run's recorded replies, served by request key (see `stop.gateway`);
- anything else: a litellm model string (`openai/gpt-4o-mini`, `anthropic/...`, `ollama/...`),
  optionally with an OpenAI-compatible `api_base`.

Budgets, retries, caching and logging live in `stop.gateway`; a Model only answers one request.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stop.errors import StopError


@dataclass
class ModelRequest:
    """One chat request. `n` samples of the same messages count as one request."""

    messages: list[dict]
    n: int = 1
    temperature: float = 0.7
    max_tokens: int = 1024

    def canonical(self) -> dict[str, Any]:
        """The fields that decide the answer, in a stable form for hashing."""
        return {
            "messages": [{"role": m.get("role", "user"), "content": m.get("content", "")}
                         for m in self.messages],
            "n": int(self.n),
            "temperature": round(float(self.temperature), 6),
            "max_tokens": int(self.max_tokens),
        }


@dataclass
class ModelReply:
    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    model: str = ""
    cached: bool = False


class Model(Protocol):
    name: str

    def complete(self, req: ModelRequest) -> ModelReply: ...

    def close(self) -> None: ...


class ModelError(StopError):
    """A model call failed. `retryable` marks rate limits, server errors and timeouts."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token) for backends that report none."""
    return max(1, len(text) // 4) if text else 0


# ---------------------------------------------------------------- scripted


class ScriptedModel:
    """Replies from a fixed script; records every request. Zero cost.

    Each entry is `{"match": substring-or-None, "texts": [...]}`. A request takes the first
    entry whose `match` occurs in the concatenated message contents (None matches anything) and
    gets `n` texts from it, cycling through the entry's texts in order. Token counts are
    estimated as len(text) / 4.
    """

    def __init__(self, entries: list[dict], name: str = "scripted") -> None:
        if not isinstance(entries, list) or not entries:
            raise ModelError("scripted model needs a non-empty list of replies")
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not isinstance(e.get("texts"), list) or not e["texts"]:
                raise ModelError(f"scripted reply {i} needs a non-empty `texts` list")
            if e.get("match") is not None and not isinstance(e["match"], str):
                raise ModelError(f"scripted reply {i}: `match` must be a string or null")
        self.entries = entries
        self.name = name
        self.requests: list[ModelRequest] = []
        self._cursors = [0] * len(entries)
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedModel:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ModelError(f"scripted model file not found: {p}") from None
        except json.JSONDecodeError as e:
            raise ModelError(f"scripted model file {p} is not JSON ({e.msg} at line {e.lineno})") from None
        entries = data.get("replies") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ModelError(f"scripted model file {p} needs a top-level `replies` list")
        return cls(entries, name=f"scripted:{p.name}")

    def complete(self, req: ModelRequest) -> ModelReply:
        start = time.monotonic()
        prompt = "".join(str(m.get("content", "")) for m in req.messages)
        with self._lock:
            self.requests.append(req)
            for i, e in enumerate(self.entries):
                if e.get("match") is None or e["match"] in prompt:
                    texts = []
                    for _ in range(max(1, req.n)):
                        texts.append(str(e["texts"][self._cursors[i] % len(e["texts"])]))
                        self._cursors[i] += 1
                    break
            else:
                raise ModelError(f"scripted model has no reply matching the prompt {prompt[:80]!r}")
        return ModelReply(
            texts=texts,
            prompt_tokens=estimate_tokens(prompt),
            completion_tokens=sum(estimate_tokens(t) for t in texts),
            latency_s=time.monotonic() - start,
            model=self.name,
        )

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- litellm


def _import_litellm() -> Any:
    # Without this litellm fetches its cost map from the network at import (~7 s offline).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class LiteLLMModel:
    """Any provider litellm knows; keys come from the environment.

    `n` is sent as one request where the backend honours it (`supports_n`); otherwise the
    samples are drawn one request at a time.
    """

    def __init__(self, name: str, *, api_base: str | None = None, api_key: str | None = None,
                 timeout_s: float = 600.0, supports_n: bool = True, display_name: str | None = None) -> None:
        self.name = display_name or name
        self.litellm_name = name
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.supports_n = supports_n
        self._checked_env = False

    def _check_environment(self, litellm: Any) -> None:
        if self._checked_env or self.api_base or self.api_key:
            return
        try:
            env = litellm.validate_environment(model=self.litellm_name)
        except Exception:  # an unknown provider is reported by the call itself
            env = {}
        missing = env.get("missing_keys") or []
        if missing and not env.get("keys_in_environment", True):
            raise ModelError(
                f"model {self.litellm_name}: missing {', '.join(missing)} in the environment; "
                f"export it, or pass --api-base for an OpenAI-compatible server"
            )
        self._checked_env = True

    def complete(self, req: ModelRequest) -> ModelReply:
        litellm = _import_litellm()
        self._check_environment(litellm)
        start = time.monotonic()
        if req.n > 1 and not self.supports_n:
            parts = [self._call(litellm, req, 1) for _ in range(req.n)]
        else:
            parts = [self._call(litellm, req, req.n)]
        texts: list[str] = []
        reply = ModelReply(texts=texts, model=self.name)
        for p in parts:
            texts.extend(p.texts)
            reply.prompt_tokens += p.prompt_tokens
            reply.completion_tokens += p.completion_tokens
            reply.cost_usd += p.cost_usd
        reply.latency_s = time.monotonic() - start
        return reply

    def _call(self, litellm: Any, req: ModelRequest, n: int) -> ModelReply:
        kwargs: dict[str, Any] = {
            "model": self.litellm_name,
            "messages": req.messages,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "timeout": self.timeout_s,
            "num_retries": 0,
            "max_retries": 0,
        }
        if n != 1:
            kwargs["n"] = n
        if self.api_base:
            kwargs["api_base"] = self.api_base
            kwargs["api_key"] = self.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        elif self.api_key:
            kwargs["api_key"] = self.api_key
        try:
            resp = litellm.completion(**kwargs)
        except Exception as e:  # litellm maps every provider's errors onto its own classes
            raise _model_error(self.litellm_name, self.api_base, e) from e
        texts = [(c.message.content or "") for c in resp.choices]
        usage = getattr(resp, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            cost = float(litellm.completion_cost(completion_response=resp) or 0.0)
        except Exception:  # local and unknown models have no price: they cost nothing here
            cost = 0.0
        return ModelReply(texts=texts, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cost_usd=cost, model=self.name)

    def close(self) -> None:
        pass


def _model_error(name: str, api_base: str | None, e: Exception) -> ModelError:
    status = getattr(e, "status_code", None)
    kind = type(e).__name__
    where = f" at {api_base}" if api_base else ""
    text = str(e).splitlines()[0][:300] if str(e) else kind
    if "Connection" in kind or "Connection error" in text or "Connection refused" in text:
        return ModelError(f"model {name} unreachable{where}: {text}", retryable=True, status=status)
    if kind in ("Timeout", "APITimeoutError") or status == 408:
        return ModelError(f"model {name} timed out{where}", retryable=True, status=status)
    if kind == "AuthenticationError" or status in (401, 403):
        return ModelError(f"model {name}: authentication failed ({text}); check the provider's API key "
                          f"in the environment", status=status)
    if status == 429 or kind == "RateLimitError":
        return ModelError(f"model {name}: rate limited{where}", retryable=True, status=429)
    if isinstance(status, int) and status >= 500:
        return ModelError(f"model {name}: server error {status}{where}: {text}", retryable=True,
                          status=status)
    return ModelError(f"model {name}: {kind}: {text}", status=status)


# ---------------------------------------------------------------- replay


class ReplayModel:
    """A recorded run's replies. A `Gateway` serves them by key; anything else is a miss."""

    def __init__(self, run_id: str, recorded: dict[str, dict] | None = None) -> None:
        self.name = f"replay:{run_id}"
        self.run_id = run_id
        self.recorded = dict(recorded or {})
        names = [e.get("model") for e in self.recorded.values() if e.get("model")]
        # Keys were computed with the recorded model's name; replay must ask for the same keys.
        self.key_name = max(set(names), key=names.count) if names else self.name

    def complete(self, req: ModelRequest) -> ModelReply:
        raise ModelError(f"replay of run {self.run_id}: no recorded reply for this request")

    def close(self) -> None:
        pass


def recorded_replies(run_ref: str) -> tuple[str, dict[str, dict]]:
    """(run id, {key: model_call event}) of a stored run, for replay and resume."""
    from stop.store import RunStore

    run = RunStore().open(run_ref)
    events = {e["key"]: e for e in run.events("model_call") if e.get("key") and "texts" in e}
    return run.id, events


# ---------------------------------------------------------------- resolution


def resolve_model(spec: str | None, *, api_base: str | None = None) -> Model:
    """A Model for a user's model string; see the module docstring for the forms."""
    spec = (spec or "").strip() or None
    if spec is None and not api_base:
        spec = os.environ.get("STOP_MODEL") or None
    if spec in (None, "embedded", "smollm2"):
        if api_base:
            return LiteLLMModel("openai/local", api_base=api_base, display_name=spec or "local")
        from stop.local_model import LocalModel

        return LocalModel("smollm2" if spec == "smollm2" else "embedded")
    if spec.startswith("scripted:"):
        return ScriptedModel.from_file(spec.split(":", 1)[1])
    if spec.startswith("replay:"):
        return ReplayModel(*recorded_replies(spec.split(":", 1)[1]))
    return LiteLLMModel(spec, api_base=api_base)
