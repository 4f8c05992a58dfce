"""The report's two documents, drawn by Jinja2 templates (`templates/`) from the title and the built sections.

Each template has one macro per block shape (`blocks`) and draws whatever sections it gets. Every value passes through
`terminal_text` and then HTML escaping (HTML) or through `markdown_text` (Markdown; in a table cell, where no block
can start, its `line_start=False` form) on its way in, so a class or folder name cannot add markup; only the
templates' own text and `Markup` built here (image sources) go in as they are.
The HTML page inlines its style (`templates/report.css.j2`) and its images (data URIs), and has no scripts, external
styles or fonts: it opens offline. Its tables scroll sideways in boxes of their own where they are wider than the
page. The Markdown links its images by their path from the report folder.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from cnnlab.common.text import markdown_text, terminal_text


def html_document(title: str, sections: list[tuple[str | None, list]]) -> str:
    return _render("report.html.j2", _html_value, title, sections, _data_uri)


def markdown_document(title: str, sections: list[tuple[str | None, list]], out_dir: Path) -> str:
    return _render("report.md.j2", _markdown_value, title, sections, lambda path: path.relative_to(out_dir).as_posix(),
                   in_cell=_markdown_cell)


def _html_value(value: object) -> Markup:
    return escape(terminal_text(value))


def _markdown_value(value: object) -> Markup:
    # Markup only so that autoescaping leaves it alone: it is escaped for Markdown, where HTML escapes would show.
    return Markup(markdown_text(value))


def _markdown_cell(value: object) -> Markup:
    # A table cell's content is inline: a "-" or "1." there starts no list, so it needs no escape.
    return Markup(markdown_text(value, line_start=False))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render(template: str, shown: Callable[[object], Markup], title: str, sections: list,
            image_source: Callable[[Path], str], in_cell: Callable[[object], Markup] | None = None) -> str:
    """Render one template, every value escaped by `shown`, or by `in_cell` where the template filters it so (a table
    cell). Both are autoescaped so that a macro's output, which is Markup, goes in as it is, not escaped twice."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        finalize=lambda value: value if isinstance(value, Markup) else shown(value),
    )
    environment.filters["in_cell"] = in_cell or shown
    return environment.get_template(template).render(
        title=title, sections=sections, source=lambda path: Markup(image_source(path)))
