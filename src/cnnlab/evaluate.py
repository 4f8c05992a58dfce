"""Evaluation on the test set: loss, accuracy, per-class accuracy and the confusion matrix, from one pass."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from cnnlab import rundir
from cnnlab.config import TTA_LEVELS
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


def read_metrics(path: Path) -> dict:
    """A run's metrics.json, checked to hold what later commands use, of the kind they use it as: the test scores
    (which `evaluate` always writes) and, where present, the training summary. Anything else is damage, reported in
    one line naming the file and the value."""
    metrics = rundir.read_json(path)
    problem = _scores_problem(metrics) or _training_problem(metrics)
    if problem:
        raise CnnlabError(f"{path} is damaged ({problem})")
    return metrics


def _is_number(value, low: float = 0.0, high: float = math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def _scores_problem(metrics) -> str | None:
    if not isinstance(metrics, dict):
        return "not a JSON object"
    data = metrics.get("data")
    classes = data.get("classes") if isinstance(data, dict) else None
    if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)
            and len(set(classes)) == len(classes)):
        return "no list of distinct class names"
    matrix = metrics.get("confusion_matrix")
    if not (isinstance(matrix, list) and len(matrix) == len(classes) and all(
            isinstance(row, list) and len(row) == len(classes) and all(map(_is_count, row)) for row in matrix)):
        return f"its confusion matrix is not {len(classes)} x {len(classes)} counts"
    per_class = metrics.get("per_class_accuracy")
    if not (isinstance(per_class, dict) and set(per_class) == set(classes)
            and all(_is_number(value, high=1) for value in per_class.values())):
        return "per_class_accuracy is not an accuracy for each class"
    for name, high in (("test_accuracy", 1), ("test_loss", math.inf)):
        if not _is_number(metrics.get(name), 0, high):
            return f"{name} is not a number in [0, {high}]"
    augmentation = metrics.get("test_time_augmentation", 0)  # runs from before test-time augmentation: none
    if type(augmentation) is not int or augmentation not in TTA_LEVELS:
        return f"test_time_augmentation is not one of {TTA_LEVELS}"
    return None


def _training_problem(metrics: dict) -> str | None:
    """The training summary is optional (a run re-scored after its metrics were lost has none), but typed."""
    for name in ("parameters", "trainable_parameters", "epochs"):
        if name in metrics and not _is_count(metrics[name]):
            return f"{name} is not a count"
    for name in ("train_seconds", "seconds_per_epoch"):
        if metrics.get(name) is not None and not _is_number(metrics[name]):
            return f"{name} is not a number of seconds"
    phases = metrics.get("phases", [])
    if not (isinstance(phases, list) and all(
            isinstance(phase, dict) and isinstance(phase.get("name"), str)
            and (phase.get("seconds_per_epoch") is None or _is_number(phase["seconds_per_epoch"]))
            for phase in phases)):
        return "phases are not a list of named phases"
    for name in ("label", "preset"):
        if not isinstance(metrics.get(name, ""), str):
            return f"{name} is not text"
    for name in ("hardware", "versions"):
        if not isinstance(metrics.get(name, {}), dict):
            return f"{name} is not an object"
    return None


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
