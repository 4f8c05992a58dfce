"""metrics.json: a run's test scores, training summary and, on request, scores under corruptions, checked on reading.

Every command that reads a run's metrics reads them here (through `Run.metrics`), so that a damaged or edited file is
one line naming the file and the value, never a KeyError three modules later.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from cnnlab.common.errors import CnnlabError
from cnnlab.common.files import read_json
from cnnlab.config import TTA_LEVELS


# metrics.json's mark of a run that has not met the test set (a search's trial): false, and no test scores
TEST_SCORED = "test_scored"


def read_metrics(path: Path, require_test: bool = True) -> dict:
    """A run's metrics.json, checked to hold what later commands use, of the kind they use it as: the test scores
    (which `evaluate` always writes) and, where present, the training summary. Anything else is damage, reported in
    one line naming the file and the value. A run kept from the test set (a search's trial) is refused, saying how to
    score it, unless `require_test` is false."""
    metrics = read_json(path)
    if isinstance(metrics, dict) and metrics.get(TEST_SCORED) is False:
        if require_test:
            raise CnnlabError(f"{path.parent} has not been scored on the test set (a search's trial: only the best "
                              f"trial is); score it with `cnnlab evaluate {path.parent}`")
        problem = _classes_problem(metrics) or _training_problem(metrics)
    else:
        problem = _scores_problem(metrics) or _training_problem(metrics) or _corruptions_problem(metrics)
    if problem:
        raise CnnlabError(f"{path} is damaged ({problem})")
    return metrics


def _is_number(value, low: float = 0.0, high: float = math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def _classes_problem(metrics: dict) -> str | None:
    data = metrics.get("data")
    classes = data.get("classes") if isinstance(data, dict) else None
    if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)
            and len(set(classes)) == len(classes)):
        return "no list of distinct class names"
    return None


def _scores_problem(metrics) -> str | None:
    if not isinstance(metrics, dict):
        return "not a JSON object"
    if problem := _classes_problem(metrics):
        return problem
    classes = metrics["data"]["classes"]
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
    if metrics.get("best_val_accuracy") is not None and not _is_number(metrics["best_val_accuracy"], high=1):
        return "best_val_accuracy is not an accuracy"
    phases = metrics.get("phases", [])
    if not (isinstance(phases, list) and all(
            isinstance(phase, dict) and isinstance(phase.get("name"), str)
            and (phase.get("seconds_per_epoch") is None or _is_number(phase["seconds_per_epoch"]))
            for phase in phases)):
        return "phases are not a list of named phases"
    flops = metrics.get("flops", {})  # runs from before cnnlab counted FLOPs: none
    if not (isinstance(flops, dict) and all(value is None or _is_number(value) for value in flops.values())):
        return "flops are not numbers of FLOPs"
    for name in ("label", "preset"):
        if not isinstance(metrics.get(name, ""), str):
            return f"{name} is not text"
    for name in ("hardware", "versions"):
        if not isinstance(metrics.get(name, {}), dict):
            return f"{name} is not an object"
    return None


def _corruptions_problem(metrics: dict) -> str | None:
    """The scores under corruptions are optional (`evaluate --corruptions` adds them), but complete and typed."""
    if "corruptions" not in metrics:
        return None
    from cnnlab.evaluation.corruptions import CORRUPTIONS, FAMILIES, SEVERITIES  # only when there are some: it imports SciPy

    record = metrics["corruptions"]
    if not isinstance(record, dict):
        return "corruptions is not an object"
    if not (type(record.get("seed")) is int and 0 <= record["seed"] < 2**32):
        return "corruptions.seed is not a seed"
    if not (_is_count(record.get("images")) and record["images"] >= 1):
        return "corruptions.images is not a count of images"
    for name in ("clean_accuracy", "mean_accuracy"):
        if not _is_number(record.get(name), high=1):
            return f"corruptions.{name} is not an accuracy"
    scores = record.get("accuracy")
    if not (isinstance(scores, dict) and set(scores) == set(CORRUPTIONS) and all(
            isinstance(row, list) and len(row) == len(SEVERITIES) and all(_is_number(value, high=1) for value in row)
            for row in scores.values())):
        return (f"corruptions.accuracy is not {len(SEVERITIES)} accuracies for each of the {len(CORRUPTIONS)} "
                "corruptions")
    families = record.get("families")
    if not (isinstance(families, dict) and set(families) == set(FAMILIES)
            and all(_is_number(value, high=1) for value in families.values())):
        return "corruptions.families is not an accuracy for each family"
    if not (isinstance(record.get("images_sha256"), str) and re.fullmatch("[0-9a-f]{64}", record["images_sha256"])):
        return "corruptions.images_sha256 is not a SHA-256"
    if not _is_number(record.get("seconds")):
        return "corruptions.seconds is not a number of seconds"
    return None
