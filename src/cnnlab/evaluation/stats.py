"""The statistics of test-set scores the report states: intervals, tests, and per-class numbers.

Plain NumPy on purpose: the report runs without Keras, and scipy's versions of these (`binomtest(...).proportion_ci`,
`contingency.mcnemar` lives in statsmodels) would add a dependency for a few lines each.
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): unlike the normal approximation it stays inside
    [0, 1] and keeps its coverage near 0% and 100% accuracy, where small test sets often are."""
    if total <= 0:
        return 0.0, 1.0
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half_width = z / (1 + z * z / total) * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def mcnemar_p_value(first_right: np.ndarray, second_right: np.ndarray) -> float:
    """Two-sided p-value of McNemar's test (continuity-corrected): do two models scored on the same images differ?"""
    only_first = int(np.sum(first_right & ~second_right))
    only_second = int(np.sum(~first_right & second_right))
    if only_first + only_second == 0:
        return 1.0
    statistic = (abs(only_first - only_second) - 1) ** 2 / (only_first + only_second)
    return math.erfc(math.sqrt(max(statistic, 0.0) / 2))  # chi-squared with one degree of freedom


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: p-values comparable with 0.05 however many tests were made (it controls the
    family-wise error rate like Bonferroni's correction, and rejects at least as much)."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def precision_recall_f1(confusion: np.ndarray) -> np.ndarray:
    """Per class (rows of the result): precision, recall and F1 from a confusion matrix (rows true, columns predicted).
    A class never predicted has precision 0; F1 is 0 where precision and recall both are."""
    confusion = np.asarray(confusion, dtype=float)
    hits = confusion.diagonal()
    precision = hits / np.maximum(confusion.sum(axis=0), 1)
    recall = hits / np.maximum(confusion.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return np.stack([precision, recall, f1], axis=1)


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The share of images whose true class is among the model's k most probable (ties broken by class order)."""
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(ranked == np.asarray(labels)[:, None], axis=1)))


def top_confusions(confusion: np.ndarray, count: int) -> list[tuple[int, int, int]]:
    """The `count` most frequent mistakes as (true class, predicted class, images), most frequent first."""
    confusion = np.array(confusion, dtype=int)
    np.fill_diagonal(confusion, 0)
    flat = np.argsort(-confusion, axis=None, kind="stable")[:count]
    pairs = [(*np.unravel_index(index, confusion.shape), confusion.flat[index]) for index in flat]
    return [(int(true), int(predicted), int(images)) for true, predicted, images in pairs if images > 0]


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of one value is 0."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
