"""The shapes a section's content comes in: what the sections build and what both templates know how to draw.

A section is a list of blocks: `Paragraph`, `Table`, `Picture`, `BulletList`, `Notes` and `Details` (blocks folded
under a summary). Each block names its `shape`; each template has one macro per shape. Text in a block is a string, or
a tuple of strings, `Code` and `PerFormat` parts. Every string is a value that the templates escape (`render`), never
markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class Code:
    """A command, in a code font. Its text is escaped like any value, which inside a Markdown code span would show
    the escapes: keep it to words, spaces and dashes."""

    text: str
    shape: ClassVar[str] = "code"


@dataclass(frozen=True)
class PerFormat:
    """Text worded for each format, where the two show a thing differently (a highlighted row is bold in Markdown)."""

    html: str
    markdown: str
    shape: ClassVar[str] = "per-format"


Text = str | tuple[str | Code | PerFormat, ...]


@dataclass(frozen=True)
class Paragraph:
    text: Text
    name: str = ""  # its class in the HTML

    shape: ClassVar[str] = "paragraph"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    name: str = ""  # its class in the HTML
    highlighted: tuple[int, ...] = ()  # rows to draw the eye to: shaded in HTML, bold in Markdown
    code_rows: tuple[int, ...] = ()  # rows of commands: their cells after the first are in a code font (HTML)

    shape: ClassVar[str] = "table"


@dataclass(frozen=True)
class Picture:
    """A figure under a heading of its own (a level-2 heading, as a section's), with its caption."""

    heading: str
    caption: str
    path: Path

    shape: ClassVar[str] = "picture"


@dataclass(frozen=True)
class BulletList:
    items: list[str]

    shape: ClassVar[str] = "bullet-list"


@dataclass(frozen=True)
class Notes:
    """Lines in small print: paragraphs of a <div> in HTML, a bulleted list in Markdown."""

    lines: list[str]
    name: str = ""  # the class of the HTML <div>

    shape: ClassVar[str] = "notes"


@dataclass(frozen=True)
class Details:
    """Blocks folded under a one-line summary in HTML. Markdown cannot fold: there the summary comes before the
    blocks, as a level-3 heading where `heading` is set, else as a paragraph."""

    summary: Text
    blocks: list
    name: str = ""  # its class in the HTML
    open: bool = False  # unfolded when the page opens
    heading: bool = False

    shape: ClassVar[str] = "details"
