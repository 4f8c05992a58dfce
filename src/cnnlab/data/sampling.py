"""Class-stratified samples, and sizes given as a fraction or a count: what the validation split, an image folder's
carved test set and `data.test_limit` all draw with, so that each takes the same share of every class."""

from __future__ import annotations

import numpy as np


def count_of(size: float, total: int) -> int:
    """A size given as a fraction (below 1) or a count (from 1), as a count of `total` items."""
    return round(size * total) if size < 1 else int(size)


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of `size` items whose class proportions match `labels` as closely as whole numbers allow."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = size * counts / counts.sum()
    quotas = np.floor(exact).astype(int)
    # Largest remainders get the leftover places; ties go to the lower class id, so the result is deterministic.
    leftovers = size - quotas.sum()
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftovers]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == cls))[:quota] for cls, quota in zip(classes, quotas)]
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
