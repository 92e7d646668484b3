"""Helpers an improver may import inside the sandbox: ``from helpers import extract_code``."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The longest fenced code block in a model reply, or the reply itself when it has none."""
    if not isinstance(text, str):
        return ""
    blocks = [body for _lang, body in _FENCE.findall(text)]
    if not blocks:
        return text.strip()
    return max(blocks, key=len).strip("\n")
