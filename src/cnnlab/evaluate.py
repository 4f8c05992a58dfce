"""Evaluation on the test set: loss, accuracy, per-class accuracy and the confusion matrix, from one pass."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError, first_line

EPSILON = 1e-7  # Keras clips probabilities the same way in categorical_crossentropy


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)


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


def read_history(history_csv: Path) -> dict[str, list[float]]:
    """history.csv as columns: {"epoch": [...], "loss": [...], "val_accuracy": [...], ...}."""
    columns: dict[str, list[float]] = {}
    try:
        with open(history_csv, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    columns.setdefault(key, []).append(float(value) if value not in ("", None) else float("nan"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CnnlabError(f"cannot read {history_csv}: {first_line(exc)}") from None
    return columns
