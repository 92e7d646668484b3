"""Language-model backends behind one small protocol.

`resolve_model(spec)` turns a user's model string into a `Model`:

- None or "embedded": the local Qwen2.5-Coder-1.5B-Instruct GGUF, served on 127.0.0.1;
- "smollm2": the small SmolLM2-135M smoke model, served the same way;
- "scripted:FILE": replies read from a JSON file (tests and debugging);
- "replay:RUN": a run's recorded replies, served by request key (see `stop.models.gateway`);
- anything else: a litellm model string (`openai/gpt-4o-mini`, `anthropic/...`, `ollama/...`),
  optionally with an OpenAI-compatible `api_base`.

Budgets, retries, caching and logging live in `stop.models.gateway`, per-run spending caps in
`stop.models.caps`; a Model only answers one request and says what it is (see `stop.models.base`).
"""

from __future__ import annotations

import os

from stop.models.base import Model, ModelError, ModelReply, ModelRequest
from stop.models.litellm_model import LiteLLMModel
from stop.models.local import LocalModel
from stop.models.replay import ReplayModel, recorded_replies
from stop.models.scripted import ScriptedModel

__all__ = ["LiteLLMModel", "LocalModel", "Model", "ModelError", "ModelReply", "ModelRequest",
           "ReplayModel", "ScriptedModel", "resolve_model"]


def resolve_model(spec: str | None, *, api_base: str | None = None,
                  timeout_s: float | None = None) -> Model:
    """A Model for a user's model string; see the module docstring for the forms.

    `timeout_s`: per request (the run setting `model_timeout_s`); default STOP_MODEL_TIMEOUT_S,
    else 600 s (an hour for the embedded model).
    """
    spec = (spec or "").strip() or None
    if spec is None and not api_base:
        spec = os.environ.get("STOP_MODEL") or None
    if spec in (None, "embedded", "smollm2"):
        if api_base:  # the embedded model served elsewhere (`stop model serve`): still free
            return LiteLLMModel("openai/local", api_base=api_base, display_name=spec or "local",
                                timeout_s=timeout_s, free=True)
        return LocalModel("smollm2" if spec == "smollm2" else "embedded", timeout_s=timeout_s)
    if spec.startswith("scripted:"):
        return ScriptedModel.from_file(spec.split(":", 1)[1])
    if spec.startswith("replay:"):
        return ReplayModel(*recorded_replies(spec.split(":", 1)[1]))
    return LiteLLMModel(spec, api_base=api_base, timeout_s=timeout_s)
