"""Helpers an improver may import inside the sandbox: ``from helpers import extract_code``.

The host imports this same module (``stop.container.helpers``), so the code in a model reply is
read one way everywhere: by improvers in the container, by the unsandboxing experiment and by
the audit when it looks for a candidate's source among the replies.
"""

from __future__ import annotations

import ast
import re

FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def code_blocks(text: str) -> list[str]:
    """The bodies of the complete fenced code blocks of `text`, in order."""
    if not isinstance(text, str):
        return []
    return [body for _lang, body in FENCE.findall(text)]


def extract_code(text: str) -> str:
    """The code of a model reply: its longest complete fenced block, without the newlines
    around it.

    A reply with no complete block is code only when it is Python source as a whole (it parses
    and defines a function); it is then returned without the newlines around it. Anything else
    has no code and gives "": prose, or a block the token limit cut off before its closing
    fence. An improver then skips it instead of spending a utility call on text that cannot run.
    """
    blocks = code_blocks(text)
    if blocks:
        return max(blocks, key=len).strip("\n")
    if not isinstance(text, str) or "def " not in text:
        return ""
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte in the text
        return ""
    return text.strip("\n")
