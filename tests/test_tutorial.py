"""docs/tutorial.py (a jupytext "percent" file) and docs/render_tutorial.py: the tutorial keeps its shape, runs as a
script in its small mode, and renders into Markdown with the numbers its runs recorded."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_metrics
from cnnlab.common.cores import usable_cores

DOCS = Path(__file__).resolve().parent.parent / "docs"
TUTORIAL = DOCS / "tutorial.py"
# The seed tutorial's own sections, in its order.
SECTIONS = ["Data preparation", "Model architecture", "Training", "Evaluating", "Fine-tuning VGG16", "Conclusion"]


def _renderer():
    """docs/render_tutorial.py as a module (docs/ is no package); registered first, as its dataclasses need."""
    if "render_tutorial" not in sys.modules:
        spec = importlib.util.spec_from_file_location("render_tutorial", DOCS / "render_tutorial.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["render_tutorial"] = module
        spec.loader.exec_module(module)
    return sys.modules["render_tutorial"]


def _small_run_environment(archive: Path, out: Path) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CNNLAB_TUTORIAL_SMALL": "1", "CNNLAB_DATA": str(archive),
            "CNNLAB_TUTORIAL_WEIGHTS": "none", "CNNLAB_TUTORIAL_OUT": str(out)}


def _scores_line(metrics: dict) -> str:
    return f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f}"


# ---------------------------------------------------------------------------------------------------------------------
# The file's shape


def test_the_tutorial_is_a_jupytext_percent_file_with_the_seed_tutorials_sections_in_order():
    """Checked by hand, as jupytext is no cnnlab dependency: a commented header, then cells that each start with
    `# %%` (code) or `# %% [markdown]` (every line a comment), a keras-io style header, the six sections in order."""
    lines = TUTORIAL.read_text(encoding="utf-8").splitlines()
    markers = [index for index, line in enumerate(lines) if line.startswith("# %%")]
    assert markers, "no cells"
    assert all(line.startswith("#") or not line.strip() for line in lines[:markers[0]]), "code before the first cell"
    assert "#       format_name: percent" in lines[:markers[0]]  # jupytext's header names the format
    assert {lines[index] for index in markers} == {"# %%", "# %% [markdown]"}
    headings = []
    kinds = []
    for start, end in zip(markers, [*markers[1:], len(lines)]):
        kind = "markdown" if lines[start].endswith("[markdown]") else "code"
        body = lines[start + 1:end]
        kinds.append(kind)
        assert any(line.strip() for line in body), f"empty cell at line {start + 1}"
        if kind == "markdown":
            assert all(line.startswith("#") or not line.strip() for line in body), f"cell at line {start + 1}"
            headings += [line[len("# ## "):] for line in body if line.startswith("# ## ")]
        else:
            compile("\n".join(body), f"{TUTORIAL}:{start + 2}", "exec")  # each code cell is valid Python on its own
    header = "\n".join(lines[markers[0]:markers[1]])
    assert kinds[0] == "markdown" and lines[markers[0] + 1].startswith("# # ")  # the title
    for field in ("**Author:**", "**Date created:**", "**Description:**"):
        assert field in header
    assert [heading for heading in headings if heading in SECTIONS] == SECTIONS
    assert kinds.count("code") >= len(SECTIONS)


def test_the_renderer_reads_the_same_cells():
    cells = _renderer().read_cells(TUTORIAL)
    assert cells[0].kind == "markdown" and cells[0].source.startswith("# ")
    titles = [line[3:] for cell in cells if cell.kind == "markdown" for line in cell.source.splitlines()
              if line.startswith("## ")]
    assert [title for title in titles if title in SECTIONS] == SECTIONS
    assert all(cell.kind == "code" or "# %%" not in cell.source for cell in cells)


def test_jupytext_reads_the_tutorial_as_the_renderer_does():
    jupytext = pytest.importorskip("jupytext")  # not a cnnlab dependency: checked where it happens to be installed
    notebook = jupytext.reads(TUTORIAL.read_text(encoding="utf-8"), fmt="py:percent")
    cells = _renderer().read_cells(TUTORIAL)
    assert [cell.cell_type for cell in notebook.cells] == [cell.kind for cell in cells]
    assert [cell.source.strip() for cell in notebook.cells] == [cell.source.strip() for cell in cells]
    # Written back, the file is as jupytext writes it (but for the version of jupytext that wrote it).
    written = jupytext.writes(notebook, fmt="py:percent")
    assert _without_version(written) == _without_version(TUTORIAL.read_text(encoding="utf-8"))


def _without_version(text: str) -> str:
    return re.sub(r"^#       jupytext_version: .*\n", "", text, flags=re.MULTILINE)


# ---------------------------------------------------------------------------------------------------------------------
# The renderer's mechanics, on a tutorial of three cells (no training, no Keras)


def test_the_renderer_writes_prose_code_output_figures_and_times(tmp_path):
    from matplotlib.figure import Figure

    render = _renderer()
    work = tmp_path / "work"
    (work / "run" / "figures").mkdir(parents=True)
    figure = Figure(figsize=(1, 1))
    figure.subplots().plot([0, 1])
    figure.savefig(work / "run" / "figures" / "curve.png")
    source = tmp_path / "tiny.py"
    source.write_text(
        "# ---\n# jupyter:\n#   jupytext:\n# ---\n\n"
        "# %% [markdown]\n# # Tiny\n#\n# Some *prose*.\n\n"
        "# %%\nanswer = 6 * 7\nprint('counting\\r', end='')\nprint('answer', answer)\n\n"
        "# %% [markdown]\n# ## Second\n\n"
        f"# %%\nprint('again', answer)\nprint('figure: {work / 'run' / 'figures' / 'curve.png'}')\n",
        encoding="utf-8",
    )
    cells = render.read_cells(source)
    assert [cell.kind for cell in cells] == ["markdown", "code", "markdown", "code"]
    outputs = render.run_cells(cells, str(source))
    assert outputs[0] is None and outputs[1].text == "answer 42"  # one namespace; a redrawn line as it ended
    assert outputs[3].text == "again 42" and outputs[3].figures == [work / "run" / "figures" / "curve.png"]
    page, figures = render.markdown_page(cells, outputs, "> HEADER", tmp_path / "page_files", work)
    assert page.index("# Tiny") < page.index("> HEADER") < page.index("```python\nanswer = 6 * 7")
    assert "```text\nanswer 42\n```" in page and "## Second" in page
    assert "![run-figures-curve](page_files/run-figures-curve.png)" in page
    assert figures == {"run-figures-curve.png": work / "run" / "figures" / "curve.png"}
    assert "```text\nagain 42\n```" in page  # the figure's line became the image, not output


def test_a_failing_cell_stops_the_render_with_its_line_in_the_tutorial(tmp_path):
    render = _renderer()
    source = tmp_path / "broken.py"
    source.write_text("# %% [markdown]\n# # Broken\n\n# %%\nx = 1\n\n# %%\nraise ValueError('cell two')\n",
                      encoding="utf-8")
    with pytest.raises(ValueError, match="cell two") as failure:
        render.run_cells(render.read_cells(source), str(source))
    where = failure.traceback[-1]
    assert (Path(where.path), where.lineno + 1) == (source, 8)  # the file's own line (pytest counts from 0)


def test_code_before_the_first_cell_is_refused(tmp_path):
    source = tmp_path / "stray.py"
    source.write_text("import os\n# %%\nprint(1)\n", encoding="utf-8")
    with pytest.raises(ValueError, match="before the first"):
        _renderer().read_cells(source)


# ---------------------------------------------------------------------------------------------------------------------
# The whole tutorial, small, on the synthetic archive


@pytest.mark.slow
def test_the_tutorial_runs_as_a_script_in_small_mode(tmp_path, synthetic_archive):
    out = tmp_path / "tutorial"
    done = subprocess.run([sys.executable, str(TUTORIAL)], capture_output=True, text=True, timeout=900,
                          env=_small_run_environment(synthetic_archive, out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    cnn, vgg16 = run_metrics(out / "cnn"), run_metrics(out / "vgg16")
    assert _scores_line(cnn) in printed  # the numbers printed are the ones the runs recorded
    assert _scores_line(vgg16) in printed
    assert cnn["train_images"] == 300 and cnn["epochs"] == 1 and vgg16["weights"] == "none"
    verdict = next(line for line in printed if "McNemar" in line)
    assert cnn["label"] in verdict and vgg16["label"] in verdict
    assert "no test of transfer learning" in verdict
    shown = [Path(line.removeprefix("figure: ")) for line in printed if line.startswith("figure: ")]
    assert len(shown) >= 6 and all(path.is_file() for path in shown)
    assert any(path.parent.parent.name == "report" for path in shown)  # the report's own figures were found
    assert (out / "report" / "report.html").is_file()


@pytest.mark.slow
def test_the_renderer_writes_the_small_run_as_markdown(tmp_path, synthetic_archive):
    page = tmp_path / "page" / "tutorial.md"
    page.parent.mkdir()
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, str(DOCS / "render_tutorial.py"), "--small", "--data", str(synthetic_archive), "--weights",
         "none", "--weights-note", "random <b>weights</b>,\nfor the check", "--out", str(page), "--work", str(work)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text(encoding="utf-8")
    assert "```python\ncnn_run = cnnlab.train_run(cnn_config, OUT / \"cnn\")" in text  # the code, as written
    for run in ("cnn", "vgg16"):
        assert _scores_line(run_metrics(work / run)) in text  # and what it printed, as the run recorded it
    header = text[:text.index("## Introduction")]
    assert "How this page was made" in header and "of wall time" in header and "keras 3." in header
    assert "Small run" in header and "no test of transfer learning" in header
    assert "> **About VGG16's weights:** random <b>weights</b>, for the check" in header
    assert f"({usable_cores()} cores" in header
    links = re.findall(r"!\[[^\]]*\]\((tutorial_files/[^)]+)\)", text)
    assert len(links) >= 6 and all((page.parent / link).is_file() for link in links)
    assert "\nfigure: " not in text  # every figure line became an image
    assert [title for title in re.findall(r"^## (.+)$", text, re.MULTILINE) if title in SECTIONS] == SECTIONS
