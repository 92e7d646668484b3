"""A model that answers from a fixed script and records every request: for tests and debugging."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from stop.models.base import Model, ModelError, ModelReply, ModelRequest, estimate_tokens


class ScriptedModel(Model):
    """Replies from a fixed script; records every request. Zero cost; never cached on disk.

    Each entry is `{"match": substring-or-None, "texts": [...]}`. A request takes the first
    entry whose `match` occurs in the concatenated message contents (None matches anything) and
    gets `n` texts from it, cycling through the entry's texts in order. Token counts are
    estimated as len(text) / 4.
    """

    cacheable = False

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
