"""Names made safe to show: in a terminal, on a figure, in Markdown.

Class names come from the data set's meta file and run names from folder names, so anyone can put anything in them:
escape sequences that recolour or clear a terminal, newlines that break a table row, Markdown or HTML that turns into
a link or a script. Only what is shown changes; the JSON files keep the real names.
"""

from __future__ import annotations

import re
import unicodedata

# Control characters (newline, ESC, ...), format characters (bidirectional overrides that reorder what is shown),
# line and paragraph separators, and surrogates (left by undecodable bytes in folder names; they cannot be encoded).
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
SHORT_TEXT_LIMIT = 60  # characters; a longer name on a figure would stretch it far past any screen

# Inline Markdown: code, emphasis, strikethrough, links and images, raw HTML and autolinks, entity references, table
# cell borders, math (GitHub), a heading's closing #. A backslash makes each of them literal (CommonMark 2.4; GFM
# tables honour \| too). "!", "(", ")" and ":" need nothing once "[" and "]" are escaped.
_MARKDOWN_INLINE = re.compile(r"([\\`*_~\[\]<>&|$#])")
# At the start of a block, what the inline escapes leave: a list item ("-", "+", "1." or "1)") or a thematic break.
_MARKDOWN_BLOCK_START = re.compile(r"^([-+]|\d{1,9}(?=[.)]))")


def terminal_text(text: object) -> str:
    """`text` on one line with every invisible character shown as its Python escape (ESC as \\x1b, newline as \\n)."""
    return "".join(ascii(char)[1:-1] if unicodedata.category(char) in _INVISIBLE_CATEGORIES else char
                   for char in str(text))


def short_text(text: object, limit: int = SHORT_TEXT_LIMIT) -> str:
    """`terminal_text`, cut to `limit` characters: for figures (drawn with math text off, so "$" needs nothing)."""
    shown = terminal_text(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def markdown_text(text: object) -> str:
    """`text` as Markdown that renders as exactly `terminal_text(text)`, on one line, wherever inline text may stand
    (trailing whitespace aside: Markdown drops it at the end of a paragraph or table cell)."""
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", terminal_text(text))
    escaped = _MARKDOWN_BLOCK_START.sub(_escape_block_marker, escaped)
    # Leading whitespace would be dropped, or make an indented code block; an entity is plain text to the block parser.
    return f"&#{ord(escaped[0])};{escaped[1:]}" if escaped[:1].isspace() else escaped


def _escape_block_marker(match: re.Match) -> str:
    marker = match.group(1)
    if marker.isdigit():  # "1." -> "1\." : the escape goes on the punctuation after the number
        return marker + "\\"
    return "\\" + marker
