"""Evaluation on the test set: loss, accuracy, per-class accuracy and the confusion matrix, from one pass."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError, first_line

EPSILON = 1e-7  # Keras clips probabilities the same way in categorical_crossentropy


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256, augmentation: int = 0) -> np.ndarray:
    """Class probabilities for `images`; with test-time augmentation, a blend of the model's answers for variants.

    Level 1 averages each image with its mirror image; level 2 gives that half the weight and the other half to the
    same for the image shifted one pixel up-left and one down-right (reflected border). Answers are averaged as
    log-probabilities, as one would average logits.
    """
    def log_probabilities(variant: np.ndarray) -> np.ndarray:
        predicted = np.asarray(model.predict(variant, batch_size=batch_size, verbose=0), dtype=np.float64)
        return np.log(np.clip(predicted, EPSILON, 1.0))

    def with_mirror(variant: np.ndarray) -> np.ndarray:
        if augmentation == 0:
            return log_probabilities(variant)
        return 0.5 * (log_probabilities(variant) + log_probabilities(variant[:, :, ::-1]))

    blended = with_mirror(images)
    if augmentation >= 2:
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        height, width = images.shape[1:3]
        shifted = [padded[:, :height, :width], padded[:, 2 : height + 2, 2 : width + 2]]
        blended = 0.5 * blended + 0.25 * sum(with_mirror(variant) for variant in shifted)
    probabilities = np.exp(blended - blended.max(axis=1, keepdims=True))
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def metrics_from_probabilities(
    probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, object]:
    """Everything the report needs from the test set, computed from the model's probabilities."""
    labels = np.asarray(labels, dtype=int)
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    true_class_probability = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)  # rows: true class, columns: predicted class
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_accuracy": float((predicted == labels).mean()),
        "test_loss": float(-np.log(true_class_probability).mean()),
        "per_class_accuracy": {name: float(acc) for name, acc in zip(class_names, per_class)},
        "confusion_matrix": confusion.tolist(),
    }


def history_number(value: str | None) -> float:
    """A history.csv cell as a number; blank cells and Keras's "NA" (no validation set) are NaN."""
    return float("nan") if value in ("", None, "NA") else float(value)


def read_history(history_csv: Path) -> dict[str, list[float]]:
    """history.csv as columns: {"epoch": [...], "loss": [...], "val_accuracy": [...], ...}."""
    columns: dict[str, list[float]] = {}
    try:
        with open(history_csv, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    columns.setdefault(key, []).append(history_number(value))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CnnlabError(f"cannot read {history_csv}: {first_line(exc)}") from None
    return columns
