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

# Inline Markdown that a backslash makes literal (CommonMark 2.4; GFM tables honour \| too), escaped only where it
# would be read as markup, so that numbers ("74.37%", "p < 0.001") read plainly. The end of the text counts as a
# start: what follows it is not known. "!", "(", ")" and ":" need nothing once "[" and "]" are escaped, nor ">" once
# "<" is.
_MARKDOWN_INLINE = re.compile("(" + "|".join([
    r"[\\`*~\[\]$|]",  # everywhere: backslash, code, emphasis, strikethrough, links, math (GitHub), table cells
    r"_(?![^\W_])|(?<![^\W_])_",  # "_" but between letters or digits, where it makes no emphasis
    r"<(?=[A-Za-z/!?]|$)",  # before what opens a tag, comment or autolink
    r"&(?=[A-Za-z0-9#]|$)",  # before what an entity reference is made of
    r"(?<!\S)#",  # at a word's start: a heading, or a heading's closing sequence
]) + ")")
# At the start of a line, what the inline escapes leave: a list item ("-", "+", "1." or "1)" before a space or the
# end), a thematic break or setext underline ("--"), a block quote (">").
_MARKDOWN_LINE_START = re.compile(r"^([-+](?=\s|$)|-(?=-)|>|\d{1,9}(?=[.)](?:\s|$)))")


def terminal_text(text: object) -> str:
    """`text` on one line with every invisible character shown as its Python escape (ESC as \\x1b, newline as \\n)."""
    return "".join(ascii(char)[1:-1] if unicodedata.category(char) in _INVISIBLE_CATEGORIES else char
                   for char in str(text))


def short_text(text: object, limit: int = SHORT_TEXT_LIMIT) -> str:
    """`terminal_text`, cut to `limit` characters: for figures (drawn with math text off, so "$" needs nothing)."""
    shown = terminal_text(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def markdown_text(text: object, *, line_start: bool = True) -> str:
    """`text` as Markdown that renders as exactly `terminal_text(text)`, on one line, wherever inline text may stand
    (trailing whitespace aside: Markdown drops it at the end of a paragraph or table cell). With `line_start` false,
    for where no block can start, as in a table cell (whose content is inline and trimmed): a leading "-", "1." or
    space is left as it is."""
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", terminal_text(text))
    if not line_start:
        return escaped
    escaped = _MARKDOWN_LINE_START.sub(_escape_block_marker, escaped)
    # Leading whitespace would be dropped, or make an indented code block; an entity is plain text to the block parser.
    return f"&#{ord(escaped[0])};{escaped[1:]}" if escaped[:1].isspace() else escaped


def _escape_block_marker(match: re.Match) -> str:
    marker = match.group(1)
    if marker.isdigit():  # "1." -> "1\." : the escape goes on the punctuation after the number
        return marker + "\\"
    return "\\" + marker
