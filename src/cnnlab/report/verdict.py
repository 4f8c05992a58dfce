"""The verdict: one paragraph, generated from the numbers alone, that says which model won, by how much and whether
that is beyond chance; and what the tables state the same way: runs grouped into setups (the same settings but for
the seed), McNemar's test of every pair of runs, and how a p-value and a training time are written.

Runs are the report's finished runs (`builder.FinishedRun`: label, config, metrics, probabilities, labels).
"""

from __future__ import annotations

import json

import numpy as np

from cnnlab.evaluation import stats
from cnnlab.models import kind_of


def verdict_paragraph(runs: list, labels: list[str]) -> str:
    """One paragraph, from the numbers alone: who won, by how much, and whether that is more than chance. Runs of one
    setup (seeds) are compared as setups: their mean ± sd, and whether every pair of their runs differs."""
    grouped = setups(runs)
    sentences = _runs_verdict(runs, labels) if len(grouped) == len(runs) else _setups_verdict(runs, grouped)
    # Each kind's own warning about how a run of it started (VGG16 from random weights: no test of transfer learning).
    sentences += dict.fromkeys(caveat for run in runs if (caveat := kind_of(run.config).caveat(run.config)))
    return " ".join(sentences)


def _runs_verdict(runs: list, labels: list[str]) -> list[str]:
    ranked = sorted(zip(labels, runs), key=lambda pair: -pair[1].metrics["test_accuracy"])
    (best_label, best), others = ranked[0], ranked[1:]
    n = len(best.labels)
    if not others:
        return [f"{best_label} reached {best.metrics['test_accuracy']:.2%} test accuracy on {n:,} test images."]
    # The winner is tested against each other run: with several, the p-values are Holm-corrected over those tests.
    p_values = stats.holm_adjusted([stats.mcnemar_p_value(_right(best), _right(run)) for _, run in others])
    test = "McNemar's test" + (f", Holm-corrected over {len(others)} comparisons," if len(others) > 1 else "")
    sentences = []
    for (label, run), p_value in zip(others, p_values):
        sentences.append(_comparison(best_label, best, label, run, p_value, test) + ".")
        sentences += _speed_sentence([(label, run.metrics.get("train_seconds")),
                                      (best_label, best.metrics.get("train_seconds"))])
    return sentences


def _comparison(best_label: str, best, label: str, run, p_value: float, test: str) -> str:
    """The winner against one other run: both accuracies, the gap, and the test of it."""
    n = len(best.labels)
    gap = best.metrics["test_accuracy"] - run.metrics["test_accuracy"]
    comparison = (
        f"{best_label} reached {best.metrics['test_accuracy']:.2%} test accuracy against "
        f"{run.metrics['test_accuracy']:.2%} for {label}, {gap * 100:.1f} points higher"
    )
    if p_value < 0.05:
        return comparison + f" ({test} on the same {n:,} test images: {p_text(p_value)})"
    return comparison + (f", a difference {test} on the same {n:,} test images cannot tell from chance "
                         f"({p_text(p_value)}): call it a tie")


def _setups_verdict(runs: list, grouped: list[list[int]]) -> list[str]:
    """Setups ranked by mean test accuracy; the best against each other, with the Holm-corrected tests of every pair
    of their runs."""
    adjusted = pairwise_p_values(runs)
    ranked = sorted(grouped, key=lambda members: -_mean_accuracy(runs, members))
    best, others = ranked[0], ranked[1:]
    name = runs[best[0]].label
    if not others:
        return [f"{name} reached {setup_score(runs, best)} test accuracy on {len(runs[0].labels):,} test images."]
    sentences = []
    for other in others:
        other_name = runs[other[0]].label
        gap = _mean_accuracy(runs, best) - _mean_accuracy(runs, other)
        different = [adjusted[min(i, j), max(i, j)][1] < 0.05 for i in best for j in other]
        sentences.append(f"{name} reached {setup_score(runs, best)} test accuracy against {setup_score(runs, other)} "
                         f"for {other_name}, {gap * 100:.1f} points higher; {_pairs_differ(different)} "
                         "(McNemar's test, Holm-corrected over every pair of runs).")
        sentences += _speed_sentence([(other_name, _mean_seconds(runs, other)), (name, _mean_seconds(runs, best))])
    return sentences


def _pairs_differ(different: list[bool]) -> str:
    if all(different):
        return "every pair of their runs differs beyond chance"
    if not any(different):
        return "no pair of their runs differs beyond chance: call it a tie"
    return f"{sum(different)} of the {len(different)} pairs of their runs differ beyond chance"


def _speed_sentence(timed: list[tuple[str, float | None]]) -> list[str]:
    if any(seconds is None for _, seconds in timed):
        return []
    (fast_label, fast), (slow_label, slow) = sorted(timed, key=lambda pair: pair[1])
    return [f"{fast_label} trained in {duration(fast)}, {slow / max(fast, 1e-9):.1f}x faster than {slow_label} "
            f"({duration(slow)})."]


def setups(runs: list) -> list[list[int]]:
    """Indices of the runs of each setup (the same label, and every setting but the seed the same), in run order."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for index, run in enumerate(runs):
        settings = run.config.to_dict()
        del settings["train"]["seed"]
        grouped.setdefault((run.label, json.dumps(settings, sort_keys=True)), []).append(index)
    return list(grouped.values())


def setup_score(runs: list, members: list[int]) -> str:
    """The test accuracy of a setup: its one run's, or the mean ± sd of its runs (seeds)."""
    accuracies = [runs[i].metrics["test_accuracy"] for i in members]
    if len(accuracies) == 1:
        return f"{accuracies[0]:.2%}"
    mean, sd = stats.mean_and_sd(accuracies)
    return f"{mean:.2%} ± {sd * 100:.2f} points (mean ± sd of {len(accuracies)} seeds)"


def pairwise_p_values(runs: list) -> dict[tuple[int, int], tuple[float, float]]:
    """McNemar's p-value of every pair of runs (i < j), and the same Holm-adjusted over all the pairs."""
    pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    p_values = [stats.mcnemar_p_value(_right(runs[i]), _right(runs[j])) for i, j in pairs]
    return dict(zip(pairs, zip(p_values, stats.holm_adjusted(p_values))))


def p_text(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def duration(seconds: float | None) -> str:
    if seconds is None:  # a run whose training summary was lost (re-scored after its metrics.json was damaged)
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _right(run) -> np.ndarray:
    return run.probabilities.argmax(axis=1) == run.labels


def _mean_accuracy(runs: list, members: list[int]) -> float:
    return stats.mean_and_sd([runs[i].metrics["test_accuracy"] for i in members])[0]


def _mean_seconds(runs: list, members: list[int]) -> float | None:
    seconds = [runs[i].metrics.get("train_seconds") for i in members]
    return None if None in seconds else stats.mean_and_sd(seconds)[0]
