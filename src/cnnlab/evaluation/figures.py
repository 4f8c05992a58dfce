"""Pictures instead of logs: learning curves and the confusion matrix, as PNG files written atomically.

Names on the figures (classes, runs, models) are shown as they are: every figure is drawn with math text and LaTeX
off, so "$x^2$" is five characters rather than a formula (and "$\\nosuch$" no parse error), and each name passes
through `common.text.short_text` (invisible characters shown as escapes, long names cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, and none is wanted on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from cnnlab.common.files import atomic_path  # noqa: E402
from cnnlab.common.text import short_text  # noqa: E402

# Applied while a figure is built and saved: tick labels and legend entries are made then, and read these settings.
_PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}
DPI = 110  # pixels per inch of the PNG files
# The learning curves fill the report's page (about 1,100 px wide) at close to their own size, their text as large
# as the page's: 11 inches at 110 dpi, text at 12 points.
_CURVES_WIDTH = 11  # inches
_CURVES_TEXT = {**_PLAIN_TEXT, "font.size": 12}


def _save(figure, path: Path) -> None:
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)


def _legend_label(name: str) -> str:
    # matplotlib leaves out of the legend every label that is empty or starts with "_"; a zero-width space keeps it.
    shown = short_text(name)
    return "\u200b" + shown if not shown or shown.startswith("_") else shown


@dataclass(frozen=True)
class CurveMarks:
    """What a run's learning curves mark besides the curves: the epochs at which a new training phase began (VGG16's
    fine-tuning) and the epoch whose weights the run kept (its best validation accuracy)."""

    phase_starts: tuple[int, ...] = ()
    best_epoch: int | None = None


def has_validation(history: dict[str, list[float]]) -> bool:
    return any(np.isfinite(value) for value in history.get("val_accuracy", []))


@matplotlib.rc_context(_CURVES_TEXT)
def plot_learning_curves(histories: dict[str, dict[str, list[float]]], path: Path, title: str = "",
                         marks: dict[str, CurveMarks] | None = None) -> None:
    """Loss and accuracy per epoch side by side: one colour per model, training solid, validation dashed; where a run
    logged its learning rate, a panel below them draws the schedule. Dotted verticals mark where a phase began; a
    star marks the kept (best) epoch on the validation accuracy. One legend for all, below the panels."""
    marks = marks or {}
    panels = ["loss", "accuracy"] + (["learning_rate"] if any("learning_rate" in h for h in histories.values()) else [])
    figure, axes = _curve_panels("learning_rate" in panels)
    for colour, (label, history) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], histories.items()):
        epochs = [int(e) + 1 for e in history.get("epoch", [])] or list(range(1, len(history.get("loss", [])) + 1))
        prefix_name = f"{_legend_label(label)}, " if len(histories) > 1 else ""
        for axis, metric in zip(axes, panels):
            for prefix, kind, style in (("", "training", "-"), ("val_", "validation", "--")):
                values = history.get(prefix + metric)
                if values and np.isfinite(values).any():
                    axis.plot(epochs, values, style, color=colour, marker="o", markersize=3, label=prefix_name + kind)
        _draw_marks(axes, epochs, history, marks.get(label, CurveMarks()), colour)
    for axis, metric in zip(axes, panels):
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric.replace("_", " "))
        rates = [rate for history in histories.values() for rate in history.get(metric, []) if np.isfinite(rate)]
        if metric == "learning_rate" and min(rates) > 0:
            axis.set_yscale("log")  # VGG16's phases differ a hundredfold
            # Labels as "1e-05": the log scale's own are math text, which these figures would show as typed.
            axis.yaxis.set_major_formatter(LogFormatter())
            axis.yaxis.set_minor_formatter(LogFormatter())
        axis.grid(alpha=0.3)
    # One legend for all panels, below them: every panel draws the same runs in the same colours, a legend inside a
    # panel hides its curves once there are a few runs, and one beside them would narrow the panels.
    handles, names = axes[1].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4))
    figure.suptitle(short_text(title) or "Learning curves")
    _save(figure, path)


def _curve_panels(with_rate: bool):
    """The figure and its panels: loss and accuracy side by side, and the learning rate (`with_rate`) below them
    across the width (a schedule needs width more than height)."""
    rows = 2 if with_rate else 1
    figure = plt.figure(figsize=(_CURVES_WIDTH, 5.2 + 3.2 * (rows - 1)), layout="constrained")
    grid = figure.add_gridspec(rows, 2, height_ratios=[3, 2][:rows])
    axes = [figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])]
    if with_rate:
        axes.append(figure.add_subplot(grid[1, :]))
    return figure, axes


def _draw_marks(axes, epochs: list[int], history: dict[str, list[float]], marks: CurveMarks, colour) -> None:
    for start in marks.phase_starts:
        for axis in axes:
            axis.axvline(start - 0.5, color=colour, linestyle=":", linewidth=1.2)
    accuracy = history.get("val_accuracy", [])
    if marks.best_epoch in epochs and epochs.index(marks.best_epoch) < len(accuracy):
        axes[1].plot([marks.best_epoch], [accuracy[epochs.index(marks.best_epoch)]], marker="*", markersize=14,
                     color=colour, markeredgecolor="black", linestyle="none")


@matplotlib.rc_context(_PLAIN_TEXT)
def plot_per_class_accuracy(accuracies: dict[str, list[float]], class_names: tuple[str, ...], path: Path) -> None:
    """Grouped bars: one group per class, one bar per model."""
    figure, axis = plt.subplots(figsize=(11, 4))
    width = 0.8 / max(len(accuracies), 1)
    positions = np.arange(len(class_names))
    for index, (label, values) in enumerate(accuracies.items()):
        axis.bar(positions + (index - (len(accuracies) - 1) / 2) * width, values, width,
                 label=_legend_label(label))
    axis.set_xticks(positions, [short_text(name) for name in class_names], rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("test accuracy")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Per-class test accuracy")
    _save(figure, path)


@matplotlib.rc_context(_PLAIN_TEXT)
def plot_prediction_grid(
    images: np.ndarray, labels: np.ndarray, predictions: dict[str, np.ndarray], class_names: tuple[str, ...],
    path: Path, columns: int = 6, confidences: dict[str, np.ndarray] | None = None,
) -> None:
    """Test images with the true class and each model's guess (with its probability, where `confidences` gives
    one); wrong guesses in red."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.1, rows * (2.0 + 0.3 * len(predictions))))
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if index >= len(images):
            continue
        axis.imshow(images[index], interpolation="nearest")
        axis.set_title(f"true: {short_text(class_names[labels[index]])}", fontsize=8, fontweight="bold")
        for line, (label, predicted) in enumerate(predictions.items()):
            right = predicted[index] == labels[index]
            guess = f"{label.split(' ')[0]}: {class_names[predicted[index]]}"
            if confidences and label in confidences:
                guess += f" {confidences[label][index]:.0%}"
            text = short_text(guess) + ("" if right else " ✗")
            axis.text(0.5, -0.05 - 0.12 * line, text, transform=axis.transAxes, ha="center", va="top", fontsize=7,
                      color="black" if right else "#c62828")
    figure.tight_layout(h_pad=1.0 + 2.2 * len(predictions))  # room for one line per model under each image
    _save(figure, path)


@matplotlib.rc_context(_PLAIN_TEXT)
def plot_confusion_matrix(matrix: list[list[int]], class_names: tuple[str, ...], path: Path, title: str = "") -> None:
    """Counts with rows as the true class; the colour is the row-normalised rate so classes compare fairly."""
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(class_names)
    figure, axis = plt.subplots(figsize=(0.7 * size + 2, 0.7 * size + 1.5))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    shown = [short_text(name) for name in class_names]
    axis.set_xticks(range(size), shown, rotation=45, ha="right")
    axis.set_yticks(range(size), shown)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    for row in range(size):
        for column in range(size):
            colour = "white" if rates[row, column] > 0.5 else "black"
            axis.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, fraction=0.046, label="fraction of true class")
    axis.set_title(short_text(title) or "Confusion matrix (test set)")
    _save(figure, path)


@matplotlib.rc_context(_PLAIN_TEXT)
def plot_corruption_accuracy(curves: dict[str, list[float]], path: Path) -> None:
    """Accuracy against corruption severity, one line per model: severity 0 is the clean images, 1-5 the mean over
    the corruptions at that severity."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for label, accuracies in curves.items():
        axis.plot(range(len(accuracies)), accuracies, marker="o", label=_legend_label(label))
    axis.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    axis.set_xlabel("corruption severity")
    axis.set_ylabel("test accuracy (mean over corruptions)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Accuracy under common corruptions")
    _save(figure, path)
