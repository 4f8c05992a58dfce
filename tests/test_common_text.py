import html
import json
import shutil
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt  # comes with Keras (through rich): a CommonMark renderer to check against
from PIL import Image

from cnnlab.cli import main
from cnnlab.common.text import markdown_text, short_text, terminal_text
from cnnlab.runs import rundir
from conftest import meta_payload, write_archive

# Any text, and text made mostly of the characters Markdown gives a meaning to, where escaping mistakes show.
NAMES = st.text(max_size=40) | st.text(st.sampled_from(" \\`*_~[]()<>&|$#!-+=.:;1\n\t\u00a0\u3000a"), max_size=40)
# CommonMark with GitHub's tables and strikethrough, raw HTML passed through as many renderers do.
RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


@pytest.mark.parametrize("name, shown", [
    ("\x1b[31mred", "\\x1b[31mred"),
    ("a\nb\r\tc", "a\\nb\\r\\tc"),
    ("left\u202eright", "left\\u202eright"),  # a bidirectional override would reorder what follows it
    ("line\u2028break", "line\\u2028break"),
    ("bad\udcffbyte", "bad\\udcffbyte"),  # an undecodable byte in a folder name
    ("$\\nosuch$ 猫 é 🐱", "$\\nosuch$ 猫 é 🐱"),  # printable text, backslashes included, is left as it is
])
def test_terminal_text_shows_invisible_characters_as_escapes(name, shown):
    assert terminal_text(name) == shown


def test_short_text_cuts_long_names():
    assert short_text("x" * 5000) == "x" * 59 + "…"
    assert short_text("a\nb") == "a\\nb"


def rendered_text(markdown: str) -> str:
    """The text of a one-paragraph rendering: what a reader sees."""
    page = RENDERER.render(markdown)
    assert page.startswith("<p>") and page.endswith("</p>\n"), page
    return html.unescape(page[3:-5])


@pytest.mark.parametrize("name", [
    "<script>alert(1)</script>", "a|b", "**bold**", "[x](javascript:alert(1))", "![x](y.png)", "`code`",
    "&lt;b&gt;", "~~gone~~", "$\\nosuch$", "# heading", "- item", "+ item", "1. first", "7) seventh", "> quote",
    "    indented", "***", "---", "a\\", "<http://example.com>", "a\n\n<b>raw</b>", "1.", "-", "+", "--", "_x_",
    "snake_case_", "<!-- comment -->", "<?php ?>", "</b>", "&#60;b&#62;", "heading #", "> quote > more", "a <b>c</b>",
])
def test_markdown_text_renders_as_the_literal_name(name):
    for line in (markdown_text(name) + "end", "start " + markdown_text(name) + "end"):  # block start and inline
        page = RENDERER.render(line)
        assert "<a" not in page and "<script" not in page and "<b>" not in page and "<em>" not in page
    assert rendered_text(markdown_text(name) + "end") == terminal_text(name) + "end"


@given(NAMES)
def test_markdown_text_fuzz_renders_literally_at_a_block_start_and_inline(name):
    shown = terminal_text(name)
    assert rendered_text(markdown_text(name) + "end") == shown + "end"
    assert rendered_text("start " + markdown_text(name) + "end") == "start " + shown + "end"


@given(NAMES, st.booleans())
def test_markdown_text_fuzz_keeps_a_table_row_whole(name, line_start):
    table = f"| a | b |\n|---|---|\n| {markdown_text(name, line_start=line_start)} | z |\n"
    page = RENDERER.render(table)
    body = page.split("<tbody>")[1] if "<tbody>" in page else ""
    assert body.count("<td>") == 2 and body.count("<tr>") == 1, page
    first_cell = html.unescape(body.split("<td>")[1].split("</td>")[0])
    assert first_cell.strip() == terminal_text(name).strip()  # Markdown trims a cell's outer whitespace


@pytest.mark.parametrize("text", [
    "74.37%", "0.740", "p < 0.001", "9.45% to 18.93%", "1,000", "2.1", "+1.2", "-0.5", "vgg16_hed_notop.h5",
    "cats & dogs", "a > b", "C#", "head 0.3; finetune 2.2", "none (random init)", "x: y!",
])
def test_markdown_text_leaves_what_markdown_reads_plainly_as_it_is(text):
    # Numbers and ordinary words start no markup: escaping them would only show backslashes in a terminal or diff.
    assert markdown_text(text) == text
    assert rendered_text(text + "end") == text + "end"


@pytest.mark.parametrize("text, at_line_start", [
    ("-", "\\-"), ("- item", "\\- item"), ("+", "\\+"), ("---", "\\---"), ("1.", "1\\."),
    ("7) seventh", "7\\) seventh"), ("> quote", "\\> quote"), (" indented", "&#32;indented"),
])
def test_block_markers_are_escaped_only_where_a_line_starts(text, at_line_start):
    # A table cell's content is inline: there a "-" or "1." is text, and Markdown trims the cell's spaces anyway.
    assert markdown_text(text) == at_line_start
    assert markdown_text(text, line_start=False) == text


# ---------------------------------------------------------------------------------------------------------------------
# End to end: a data set whose class names are hostile, through evaluate, predict and data info

HOSTILE_CLASSES = ["$\\nosuch$", "$x^2$", "\x1b[31mred", "a\nb", "x" * 64, " ", "_hidden", "猫", "<script>",
                   "left\u202eright"]


@pytest.fixture(scope="module")
def hostile_data(tmp_path_factory, good_files):
    """The synthetic set with hostile class names in its meta file."""
    files = good_files | {"batches.meta": meta_payload(HOSTILE_CLASSES)}
    return write_archive(tmp_path_factory.mktemp("hostile") / "cifar-10-python.tar.gz", files)


def assert_no_raw_controls(text):
    assert not any(unicodedata.category(char) in ("Cc", "Cf") for char in text.replace("\n", "")), repr(text)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_hostile_class_names_are_drawn_printed_escaped_and_kept_in_json(trained_run, hostile_data, tmp_path, capsys):
    run_dir = tmp_path / "$\\nosuch$ \x1b[2J run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / rundir.FIGURES / "confusion_matrix.png").unlink()
    assert main(["evaluate", str(run_dir), "--data", str(hostile_data)]) == 0
    out, err = capsys.readouterr()
    assert "figures not drawn" not in err and (run_dir / rundir.FIGURES / "confusion_matrix.png").is_file()
    assert_no_raw_controls(out)
    assert "  \\x1b[31mred " in out and "  a\\nb " in out and "  left\\u202eright " in out and "  $\\nosuch$ " in out
    assert json.loads((run_dir / rundir.METRICS).read_text())["data"]["classes"] == HOSTILE_CLASSES

    image = tmp_path / "\x1b[31mimage.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["predict", str(run_dir), str(image), "--top", "10"]) == 0
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    assert out.startswith(str(tmp_path) + "/\\x1b[31mimage.png: ") and "a\\nb " in out
    assert main(["predict", str(run_dir), str(image), "--top", "10", "--json"]) == 0
    classes = {guess["class"] for guess in json.loads(capsys.readouterr().out)[0]["top"]}
    assert classes == set(HOSTILE_CLASSES)  # machine-readable output keeps the real names


@pytest.mark.slow
def test_data_info_prints_hostile_class_names_escaped(hostile_data, capsys):
    assert main(["data", "info", "--data", str(hostile_data)]) == 0
    out = capsys.readouterr().out
    assert_no_raw_controls(out)
    lines = out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("class "))
    rows = lines[header + 1 : header + 11]
    assert [row.split("  ")[0].rstrip() for row in rows][2:4] == ["\\x1b[31mred", "a\\nb"]
