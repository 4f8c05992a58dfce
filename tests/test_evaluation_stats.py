"""cnnlab.evaluation.stats against independent implementations (SciPy, scikit-learn) and worked examples."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest
from sklearn.metrics import precision_recall_fscore_support, top_k_accuracy_score

from cnnlab.evaluation import stats


@given(st.integers(1, 20_000).flatmap(lambda total: st.tuples(st.integers(0, total), st.just(total))))
def test_wilson_interval_matches_scipy(counts):
    correct, total = counts
    expected = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson_interval(correct, total) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_wilson_interval_narrows_with_more_images_and_holds_the_share():
    narrow, wide = stats.wilson_interval(7_000, 10_000), stats.wilson_interval(70, 100)
    assert narrow[0] < 0.7 < narrow[1] and wide[0] < narrow[0] and narrow[1] < wide[1]
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_mcnemar_p_value():
    right = np.array([True] * 60 + [False] * 40)
    assert stats.mcnemar_p_value(right, right) == 1.0
    # 30 discordant pairs all one way: chi2 = 29^2/30 = 28.03, p ~ 1.2e-7
    other = right.copy()
    other[:30] = False
    assert stats.mcnemar_p_value(right, other) == pytest.approx(1.2e-7, rel=0.05)


def test_holm_adjustment_worked_example():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04); returned in the given order
    assert stats.holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm_adjusted([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm_adjusted([]) == []


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_the_order(p_values):
    adjusted = stats.holm_adjusted(p_values)
    assert all(p <= a <= 1 for p, a in zip(p_values, adjusted))
    order = np.argsort(p_values, kind="stable")
    assert all(np.diff(np.asarray(adjusted)[order]) >= 0)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=200))
def test_precision_recall_f1_match_scikit_learn(pairs):
    labels, predicted = map(np.array, zip(*pairs))
    confusion = np.zeros((5, 5), int)
    np.add.at(confusion, (labels, predicted), 1)
    expected = precision_recall_fscore_support(labels, predicted, labels=range(5), zero_division=0)[:3]
    assert stats.precision_recall_f1(confusion) == pytest.approx(np.stack(expected, axis=1))


@given(st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_top_k_accuracy_matches_scikit_learn(seed, k):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(6), 50)
    labels = rng.integers(0, 6, 50)
    expected = top_k_accuracy_score(labels, probabilities, k=k, labels=range(6))
    assert stats.top_k_accuracy(probabilities, labels, k) == pytest.approx(expected)


def test_top_confusions_are_the_largest_off_diagonal_counts():
    confusion = np.array([[50, 3, 9], [1, 40, 0], [7, 2, 30]])
    assert stats.top_confusions(confusion, 3) == [(0, 2, 9), (2, 0, 7), (0, 1, 3)]
    assert stats.top_confusions(np.eye(3, dtype=int) * 5, 3) == []  # no mistakes, nothing listed


def test_mean_and_sample_sd():
    assert stats.mean_and_sd([0.7, 0.8]) == pytest.approx((0.75, np.std([0.7, 0.8], ddof=1)))
    assert stats.mean_and_sd([0.7]) == (0.7, 0.0)
