"""Pictures instead of logs: learning curves and the confusion matrix, as PNG files written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed, and none is wanted on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cnnlab.rundir import atomic_path  # noqa: E402


def _save(figure, path: Path) -> None:
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_learning_curves(history: dict[str, list[float]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training and validation, side by side."""
    epochs = history.get("epoch")
    epochs = [int(e) + 1 for e in epochs] if epochs else list(range(1, len(history.get("loss", [])) + 1))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label, style in (("", "training", "-"), ("val_", "validation", "--")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(epochs, values, style, marker="o", markersize=3, label=label)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title or "Learning curves")
    _save(figure, path)


def plot_confusion_matrix(matrix: list[list[int]], class_names: tuple[str, ...], path: Path, title: str = "") -> None:
    """Counts with rows as the true class; the colour is the row-normalised rate so classes compare fairly."""
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(class_names)
    figure, axis = plt.subplots(figsize=(0.7 * size + 2, 0.7 * size + 1.5))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(size), class_names, rotation=45, ha="right")
    axis.set_yticks(range(size), class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    for row in range(size):
        for column in range(size):
            colour = "white" if rates[row, column] > 0.5 else "black"
            axis.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, fraction=0.046, label="fraction of true class")
    axis.set_title(title or "Confusion matrix (test set)")
    _save(figure, path)
