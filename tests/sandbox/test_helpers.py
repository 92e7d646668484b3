"""The one fenced-code parser: what improvers import in the container, and the host's callers."""

from __future__ import annotations

import pytest
from stop.container.helpers import code_blocks, extract_code

CODE = "def algorithm(x):\n    return x\n"


@pytest.mark.parametrize("reply, code", [
    (f"Idea.\n```python\n{CODE}```\nDone.", CODE.rstrip("\n")),
    (f"```\nx = 1\n```\nthen the longer one\n```py extra words\n\n{CODE}\n```", CODE.rstrip("\n")),
    # no complete fence: whole Python source that defines a function is code, as it is
    (f"\n{CODE}\n", CODE.rstrip("\n")),
    # no complete fence and not code: nothing (prose, a one-word reply, a block cut off)
    ("I would rather keep the program as it is.", ""),
    ("Done", ""),
    (f"Here you go:\n```python\n{CODE}", ""),
    ("def broken(:\n", ""),
    ("def f(): pass\x00", ""),
    (None, ""),
])
def test_extract_code(reply, code):
    assert extract_code(reply) == code


def test_code_blocks_lists_every_complete_block_in_order():
    text = "```python\na = 1\n```\nprose\n```\nb = 2\n```\n```python\nopen"
    assert code_blocks(text) == ["a = 1\n", "b = 2\n"]
    assert code_blocks("no fences") == [] and code_blocks(b"bytes") == []
