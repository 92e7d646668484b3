"""Any provider litellm knows (OpenAI, Anthropic, Ollama, any OpenAI-compatible server).

Keys come from the environment and stay in this process: no key ever reaches a container.
Everything a server sends back is untrusted: error messages quote at most one line of it, and a
reply body that is not an OpenAI chat completion is named as such, not echoed.
"""

from __future__ import annotations

import email.utils
import math
import os
import re
import time
from typing import Any

from stop.models.base import Model, ModelError, ModelReply, ModelRequest

DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "STOP_MODEL_TIMEOUT_S"


def _import_litellm() -> Any:
    # Without this litellm fetches its cost map from the network at import (~7 s offline).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def model_timeout(timeout_s: float | None, default: float = DEFAULT_TIMEOUT_S) -> float:
    """The timeout of one model request: the setting if given, else STOP_MODEL_TIMEOUT_S, else
    `default`."""
    source, value = "model_timeout_s", timeout_s
    if value is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return default
        source = TIMEOUT_ENV
        try:
            value = float(raw)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        shown = os.environ.get(TIMEOUT_ENV) if source == TIMEOUT_ENV else value
        raise ModelError(f"{source} must be a positive number of seconds, got {shown!r}")
    return float(value)


class LiteLLMModel(Model):
    """Any provider litellm knows; keys come from the environment.

    `n` is sent as one request where the backend honours it (`supports_n`); otherwise the
    samples are drawn one request at a time. `free`: a server of our own (the embedded model)
    whose replies cost nothing; otherwise the price is litellm's, and unknown where it has none.
    """

    def __init__(self, name: str, *, api_base: str | None = None, api_key: str | None = None,
                 timeout_s: float | None = None, supports_n: bool = True,
                 display_name: str | None = None, free: bool = False) -> None:
        self.name = display_name or name
        self.litellm_name = name
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = model_timeout(timeout_s)
        self.supports_n = supports_n
        self.free = free
        self._checked_env = False
        self._price_known: bool | None = None

    def price_known(self) -> bool:
        if self.free:
            return True
        if self._price_known is None:
            litellm = _import_litellm()
            try:
                litellm.cost_per_token(model=self.litellm_name, prompt_tokens=1, completion_tokens=1)
                self._price_known = True
            except Exception:  # litellm raises its own "not mapped" error for unknown models
                self._price_known = False
        return self._price_known

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
            reply.cost_usd = None if reply.cost_usd is None or p.cost_usd is None \
                else reply.cost_usd + p.cost_usd
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
        texts = [(c.message.content or "") for c in (resp.choices or [])]
        usage = getattr(resp, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost: float | None = 0.0
        if not self.free:
            try:
                cost = float(litellm.completion_cost(completion_response=resp))
            except Exception:  # litellm has no price for this model: unknown, not free
                cost = None
        return ModelReply(texts=texts, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, cost_usd=cost, model=self.name)

    def close(self) -> None:
        pass


def retry_after(e: Exception) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date) of litellm's error."""
    headers = getattr(e, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(e, "response", None), "headers", None)
    try:
        raw = headers.get("retry-after") if headers is not None else None
    except Exception:  # a headers object of another shape: no hint
        return None
    if not raw:
        return None
    raw = str(raw).strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


# litellm's wording for a 200 reply that is not a chat completion; it reports those as a 500
# and quotes the body, which came from the server and is not shown.
_NOT_JSON = "Empty or invalid response from LLM endpoint"
_NO_CHOICES = "returned a response with no 'choices'"
# The class names litellm puts before a provider's message ("litellm.X: X: OpenAIException - ").
_PREFIX = re.compile(r"^(litellm\.\w+: )?(\w+: )?(\w+Exception - )?")


def _model_error(name: str, api_base: str | None, e: Exception) -> ModelError:
    status = getattr(e, "status_code", None)
    kind = type(e).__name__
    where = f" at {api_base}" if api_base else ""
    text = _PREFIX.sub("", str(e).splitlines()[0])[:300] if str(e) else kind
    if _NOT_JSON in str(e):
        return ModelError(f"model {name}{where}: the server answered with a body that is not JSON "
                          f"(is --api-base the model server's /v1 address?)")
    if _NO_CHOICES in str(e):
        return ModelError(f"model {name}{where}: the server answered with no choices",
                          retryable=True)
    if "Connection" in kind or "Connection error" in text or "Connection refused" in text:
        return ModelError(f"model {name} unreachable{where}: {text}", retryable=True, status=status)
    if kind in ("Timeout", "APITimeoutError") or status == 408:
        return ModelError(f"model {name} timed out{where}", retryable=True, status=status)
    if kind == "AuthenticationError" or status in (401, 403):
        return ModelError(f"model {name}: authentication failed ({text}); check the provider's API key "
                          f"in the environment", status=status)
    if status == 429 or kind == "RateLimitError":
        return ModelError(f"model {name}: rate limited{where}", retryable=True, status=429,
                          retry_after_s=retry_after(e))
    if isinstance(status, int) and status >= 500:
        return ModelError(f"model {name}: server error {status}{where}: {text}", retryable=True,
                          status=status, retry_after_s=retry_after(e))
    return ModelError(f"model {name}: {kind}: {text}", status=status)
