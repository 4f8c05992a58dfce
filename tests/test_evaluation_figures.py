import json
import shutil
from collections import Counter

import matplotlib.figure
import matplotlib.text
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnlab.cli import main
from cnnlab.evaluation import figures
from cnnlab.evaluation.figures import plot_confusion_matrix, plot_learning_curves, plot_per_class_accuracy, plot_prediction_grid
from cnnlab.runs import rundir

HISTORY = {"epoch": [0, 1, 2], "loss": [2, 1.5, 1.2], "val_loss": [2.1, 1.7, 1.6],
           "accuracy": [0.3, 0.5, 0.6], "val_accuracy": [0.3, 0.45, 0.5]}


def assert_png(path, min_width=300):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width


def drawn_lines(axis):
    """(legend label, x, y) of each line a panel draws."""
    return [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in axis.get_lines()]


def test_learning_curves_png(tmp_path, monkeypatch):
    kept = drawn_figure(monkeypatch)
    path = tmp_path / "curves.png"
    plot_learning_curves({"run": HISTORY}, path, "run")
    assert_png(path, 500)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind
    loss, accuracy = kept[0].axes
    epochs = [1, 2, 3]  # Keras counts epochs from 0; the figure from 1, as the progress lines do
    assert drawn_lines(loss) == [("training", epochs, HISTORY["loss"]), ("validation", epochs, HISTORY["val_loss"])]
    assert drawn_lines(accuracy) == [("training", epochs, HISTORY["accuracy"]),
                                     ("validation", epochs, HISTORY["val_accuracy"])]
    assert kept[0].get_suptitle() == "run"


def test_learning_curves_of_several_models_on_one_figure(tmp_path, monkeypatch):
    kept = drawn_figure(monkeypatch)
    path = tmp_path / "both.png"
    shorter = {k: v[:2] for k, v in HISTORY.items()}
    plot_learning_curves({"CNN": HISTORY, "VGG16": shorter}, path)
    assert_png(path, 500)
    loss, _ = kept[0].axes
    # Each run in its own colour, its name in the legend; each keeps its own number of epochs.
    assert drawn_lines(loss) == [("CNN, training", [1, 2, 3], HISTORY["loss"]),
                                 ("CNN, validation", [1, 2, 3], HISTORY["val_loss"]),
                                 ("VGG16, training", [1, 2], shorter["loss"]),
                                 ("VGG16, validation", [1, 2], shorter["val_loss"])]
    cnn, _, vgg16, _ = loss.get_lines()
    assert cnn.get_color() != vgg16.get_color()
    legend = [text.get_text() for text in kept[0].legends[0].get_texts()]
    assert legend == ["CNN, training", "CNN, validation", "VGG16, training", "VGG16, validation"]


def test_confusion_matrix_png(tmp_path, monkeypatch):
    kept = drawn_figure(monkeypatch)
    path = tmp_path / "confusion.png"
    plot_confusion_matrix([[5, 1], [2, 7]], ("cat", "dog"), path)
    assert_png(path)
    axis = kept[0].axes[0]  # the other is the colour bar
    # Each count at (column: predicted, row: true); the colour is the share of the true class.
    assert [(text.get_position(), text.get_text()) for text in axis.texts] == [
        ((0, 0), "5"), ((1, 0), "1"), ((0, 1), "2"), ((1, 1), "7")]
    np.testing.assert_allclose(axis.images[0].get_array(), [[5 / 6, 1 / 6], [2 / 9, 7 / 9]])
    assert [label.get_text() for label in axis.get_xticklabels()] == ["cat", "dog"]
    assert [label.get_text() for label in axis.get_yticklabels()] == ["cat", "dog"]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("predicted class", "true class")


def test_per_class_and_prediction_grid_pngs(tmp_path, monkeypatch):
    kept = drawn_figure(monkeypatch)
    plot_per_class_accuracy({"a": [0.5, 0.9], "b": [0.7, 0.2]}, ("cat", "dog"), tmp_path / "per_class.png")
    assert_png(tmp_path / "per_class.png")
    bars = kept[0].axes[0]
    assert [(group.get_label(), [bar.get_height() for bar in group]) for group in bars.containers] == [
        ("a", [0.5, 0.9]), ("b", [0.7, 0.2])]
    assert [label.get_text() for label in bars.get_xticklabels()] == ["cat", "dog"]

    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    plot_prediction_grid(images, labels, {"CNN x": labels, "VGG16 y": 1 - labels}, ("cat", "dog"),
                         tmp_path / "grid.png", columns=4)
    assert_png(tmp_path / "grid.png")
    cells = kept[1].axes
    assert len(cells) == 8 and not cells[7].images  # 7 images in rows of 4: the last cell stays empty
    names = ("cat", "dog")
    for image, label, cell in zip(images, labels, cells):
        np.testing.assert_array_equal(cell.images[0].get_array(), image)
        assert cell.get_title() == f"true: {names[label]}"
        # One line per model, named by the first word of its run; CNN is right everywhere, VGG16 wrong (marked).
        assert [text.get_text() for text in cell.texts] == [f"CNN: {names[label]}", f"VGG16: {names[1 - label]} ✗"]


# Names anyone can give a class (the data set's meta file) or a run (its folder), and what a figure must show for each.
HOSTILE_NAMES = {
    "$\\nosuch$": "$\\nosuch$",  # math text that does not parse
    "$x^2$": "$x^2$",  # math text that does: still shown as typed
    "\x1b[31mred": "\\x1b[31mred",
    "a\nb": "a\\nb",
    "x" * 5000: "x" * 59 + "…",
    "": "",
    " ": " ",
    "_hidden": "_hidden",  # matplotlib would leave this label out of a legend
    "猫 é 🐱": "猫 é 🐱",
    "bad\udcffbyte": "bad\\udcffbyte",
}


@pytest.fixture
def drawn_texts(monkeypatch):
    """Every text on every figure saved, as (text, drawn as plain text); the PNG is still written."""
    texts = []
    save = matplotlib.figure.Figure.savefig

    def save_and_record(figure, *args, **kwargs):
        save(figure, *args, **kwargs)
        texts.extend((text.get_text().replace("\u200b", ""), not text.get_usetex() and not text.get_parse_math())
                     for text in figure.findobj(matplotlib.text.Text))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", save_and_record)
    return texts


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_figures_show_hostile_class_and_run_names_as_typed(tmp_path, drawn_texts):
    names = tuple(HOSTILE_NAMES)
    size = len(names)
    plot_confusion_matrix(np.eye(size, dtype=int).tolist(), names, tmp_path / "confusion.png", "$\\nosuch$: test set")
    plot_per_class_accuracy({"_hidden": [0.5] * size, "$x^2$ run": [0.7] * size}, names, tmp_path / "per_class.png")
    plot_learning_curves({"_hidden": HISTORY, "a\nb": HISTORY}, tmp_path / "curves.png", "x" * 5000)
    images = np.zeros((size, 32, 32, 3), np.uint8)
    plot_prediction_grid(images, np.arange(size), {"$x^2$": np.arange(size)[::-1]}, names, tmp_path / "grid.png")
    for png in ("confusion.png", "per_class.png", "curves.png", "grid.png"):
        assert_png(tmp_path / png, 100)
    shown = {text for text, _ in drawn_texts}
    assert set(HOSTILE_NAMES.values()) <= shown  # tick labels: every class name, as typed
    assert {"$\\nosuch$: test set", "$x^2$ run", "_hidden, training", "a\\nb, validation", "x" * 59 + "…"} <= shown
    assert {f"true: {name}" for name in HOSTILE_NAMES.values()} <= shown
    assert all(plain for _, plain in drawn_texts)  # no "$...$" is typeset as a formula


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
@settings(max_examples=15)  # each example draws two figures
@given(st.lists(st.text(max_size=80), min_size=2, max_size=4, unique=True), st.text(max_size=80))
def test_fuzz_figures_draw_any_class_and_run_names(tmp_path, class_names, run_name):
    size = len(class_names)
    plot_confusion_matrix(np.ones((size, size), int).tolist(), tuple(class_names), tmp_path / "c.png", run_name)
    plot_per_class_accuracy({run_name: [0.5] * size}, tuple(class_names), tmp_path / "p.png")
    assert_png(tmp_path / "c.png", 100)
    assert_png(tmp_path / "p.png", 100)


# ---------------------------------------------------------------------------------------------------------------------
# After training: the figures come last, and a plotting problem costs only the figures


@pytest.mark.slow
def test_a_figure_failure_after_scoring_keeps_the_metrics(trained_run, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    for name in (rundir.METRICS, rundir.TEST_PREDICTIONS):
        (run_dir / name).unlink()

    def broken(*args, **kwargs):
        raise ValueError("Unknown symbol: \\nosuch\nsecond line")

    monkeypatch.setattr(figures, "plot_confusion_matrix", broken)
    assert main(["evaluate", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "warning: figures not drawn: Unknown symbol: \\nosuch (redraw them with: cnnlab evaluate" in err
    assert "second line" not in err
    metrics = json.loads((run_dir / rundir.METRICS).read_text())
    assert metrics["test_accuracy"] > 0.5 and sum(map(sum, metrics["confusion_matrix"])) == 1000  # --test-limit
    assert (run_dir / rundir.TEST_PREDICTIONS).is_file()


def drawn_figure(monkeypatch) -> list:
    """The figures a plot function closes once saved, kept open to look at."""
    kept = []
    monkeypatch.setattr(figures.plt, "close", kept.append)
    return kept


def test_learning_curves_mark_the_phase_start_the_kept_epoch_and_draw_the_learning_rate(tmp_path, monkeypatch):
    kept = drawn_figure(monkeypatch)
    history = {**HISTORY, "learning_rate": [1e-3, 1e-3, 1e-5]}
    plot_learning_curves({"VGG16": history, "CNN": HISTORY}, tmp_path / "curves.png",
                         marks={"VGG16": figures.CurveMarks(phase_starts=(3,), best_epoch=2)})
    loss, accuracy, rate = kept[0].axes
    drawn = [list(line.get_ydata()) for line in rate.get_lines() if line.get_linestyle() != ":"]
    assert rate.get_yscale() == "log" and drawn == [[1e-3, 1e-3, 1e-5]]
    for axis in (loss, accuracy, rate):  # the second phase began before epoch 3: a line between epochs 2 and 3
        assert [list(line.get_xdata()) for line in axis.get_lines() if line.get_linestyle() == ":"] == [[2.5, 2.5]]
    stars = [line for line in accuracy.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xydata()[0]) == [2, 0.45]  # epoch 2's validation accuracy


def test_learning_curves_without_validation_draw_no_validation_line(tmp_path, monkeypatch):
    kept = drawn_figure(monkeypatch)
    no_validation = {**HISTORY, "val_accuracy": [float("nan")] * 3, "val_loss": [float("nan")] * 3}
    plot_learning_curves({"run": no_validation}, tmp_path / "curves.png")
    assert not figures.has_validation(no_validation) and figures.has_validation(HISTORY)
    labels = [line.get_label() for axis in kept[0].axes for line in axis.get_lines()]
    assert labels == ["training", "training"] and len(kept[0].axes) == 2  # no learning rate logged: two panels


PAGE_WIDTH = 1100  # px: the report page's width (report.css.j2's max-width), to which a wider figure is scaled down


@pytest.mark.parametrize("learning_rate", [False, True])
def test_learning_curves_text_is_readable_at_the_page_width(tmp_path, monkeypatch, learning_rate):
    kept = drawn_figure(monkeypatch)
    vgg16 = {**HISTORY, "learning_rate": [1e-3, 1e-3, 1e-5]} if learning_rate else HISTORY
    plot_learning_curves({"CNN": HISTORY, "VGG16": vgg16}, tmp_path / "curves.png",
                         marks={"VGG16": figures.CurveMarks(phase_starts=(3,), best_epoch=2)})
    figure = kept[0]
    with Image.open(tmp_path / "curves.png") as image:
        scale = min(1.0, PAGE_WIDTH / image.width)
    sizes = [text.get_fontsize() for text in figure.findobj(matplotlib.text.Text) if text.get_text()]
    assert min(sizes) * figures.DPI / 72 * scale >= 12  # pixels high on the page, the smallest text included
    assert max(Counter(round(axis.get_position().y0, 2) for axis in figure.axes).values()) <= 2  # panels per row
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    assert legend.get_window_extent(renderer).y1 <= min(axis.get_tightbbox(renderer).y0 for axis in figure.axes)
    ticks = [label.get_text() for label in figure.axes[-1].get_yticklabels(which="both")] if learning_rate else []
    assert not any("$" in tick for tick in ticks)  # "1e-05", not the log scale's math text shown as typed
