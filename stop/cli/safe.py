"""Text for the user's terminal: what a candidate or a model wrote is shown, never obeyed.

Threat model: candidate sources, their output, model replies and anything derived from them
(file names, error messages, findings) can carry terminal control sequences: CSI to move the
cursor or recolour, OSC 0/2 to set the window title, OSC 8 hyperlinks whose text lies about their
target, OSC 52 to write the clipboard (a command waiting to be pasted), BEL, carriage returns that
overwrite a line, and bidirectional overrides that reorder what a reader sees ("Trojan source").
Every byte of text the CLI writes goes through `visible`, through `echo` here, so none of them
reaches the terminal raw: C0 controls except newline and tab, DEL, C1 controls (ESC included),
lone surrogates and the bidi controls are written as Python-style escapes (`\\x1b`, `\\x9b`,
`\\u202e`). `--json` output is JSON-escaped already and passes through unchanged.
"""

from __future__ import annotations

import re
import sys

import click

_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)
_CONTROLS = (*(c for c in range(0x20) if c not in (0x09, 0x0A)), 0x7F, *range(0x80, 0xA0), *_BIDI)
_TABLE = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_SURROGATE = re.compile("[\ud800-\udfff]")


def visible(text: object) -> str:
    """`text` as a string with every terminal control character written out as an escape."""
    s = text if isinstance(text, str) else str(text)
    s = s.translate(_TABLE)
    if _SURROGATE.search(s):  # a lone surrogate cannot be encoded for the terminal at all
        s = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)
    return s


def echo(message: object = "", *, err: bool = False, nl: bool = True) -> None:
    """click.echo of `visible(message)`: the one way the CLI writes text."""
    click.echo(visible(message), err=err, nl=nl)


def write(message: object, *, err: bool = True) -> None:
    """Unbuffered write of visible text (progress lines), without click's newline handling."""
    stream = sys.stderr if err else sys.stdout
    stream.write(visible(message))
    stream.flush()
