"""Source views and diffs with syntax colouring, for hostile sources.

Order matters: control characters are made visible first (`visible`), then Pygments splits the
text into tokens and HTML-escapes each one as it wraps it in a span whose class comes from the
lexer's fixed token names, never from the source. The result is split into one fragment per
source line (Pygments closes its spans at every newline), so diffs can be drawn from the
coloured lines. Very large sources are shown escaped without colouring.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from markupsafe import Markup, escape

from stop.cli.safe import visible

MAX_COLOURED = 300_000  # characters; beyond this a source is shown plain
# Line separators that str.splitlines() honours but Python does not: shown, not obeyed.
_SEPARATORS = {0x2028: "\\u2028", 0x2029: "\\u2029"}
_BREAKS = re.compile(r"\r\n|\r|\n")


def _text(source: str) -> str:
    """The source with Python's own line breaks (\\n, \\r\\n, \\r) as \\n and every other
    control character visible, so line numbers agree with the ones findings cite."""
    lines = _BREAKS.split(source)
    return "\n".join(visible(line).translate(_SEPARATORS) for line in lines)


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def highlight_lines(source: str) -> list[Markup]:
    """One escaped, coloured HTML fragment per line of `source`."""
    text = _text(source or "")
    plain = _lines(text)
    if 0 < len(text) <= MAX_COLOURED:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        html = highlight(text, PythonLexer(stripnl=False, ensurenl=True),
                         HtmlFormatter(nowrap=True))
        coloured = _lines(html)
        if len(coloured) == len(plain):
            return [Markup(line) for line in coloured]
    return [escape(line) for line in plain]


def code_css() -> str:
    """The colour classes of `highlight_lines`, scoped to `.code`."""
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(style="default").get_style_defs(".code")


@dataclass
class DiffRow:
    kind: str  # "hunk" | "same" | "add" | "del"
    old: int | None
    new: int | None
    html: Markup


def diff_rows(old: str, new: str, context: int = 3) -> list[DiffRow]:
    """A unified diff of `old` against `new` as coloured rows, with hunk headers."""
    a_raw, b_raw = _lines(_text(old or "")), _lines(_text(new or ""))
    a, b = highlight_lines(old or ""), highlight_lines(new or "")
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, a_raw, b_raw, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        rows.append(DiffRow("hunk", None, None,
                            escape(f"@@ -{i1 + 1},{i2 - i1} +{j1 + 1},{j2 - j1} @@")))
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                rows += [DiffRow("same", x1 + k + 1, y1 + k + 1, b[y1 + k]) for k in range(x2 - x1)]
                continue
            rows += [DiffRow("del", x + 1, None, a[x]) for x in range(x1, x2)]
            rows += [DiffRow("add", None, y + 1, b[y]) for y in range(y1, y2)]
    return rows


def context_window(n_lines: int, line: int | None, context: int | None) -> range:
    """Line numbers (1-based) to show around `line`; all of them when context is None."""
    if context is None or not line:
        return range(1, n_lines + 1)
    return range(max(1, line - context), min(n_lines, line + context) + 1)
