"""Any provider litellm knows (OpenAI, Anthropic, Ollama, any OpenAI-compatible server).

Keys come from the environment and stay in this process: no key ever reaches a container.
"""

from __future__ import annotations

import os
import time
from typing import Any

from stop.models.base import ModelError, ModelReply, ModelRequest


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
