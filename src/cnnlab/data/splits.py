"""Train / validation / test splits. The validation set is carved from the training set, stratified and seeded;
the test set is left alone until final evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.common.errors import CnnlabError
from cnnlab.data.dataset import Dataset
from cnnlab.data.sampling import count_of, stratified_sample


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def make_splits(data: Dataset, val_size: float, seed: int, train_limit: int | None = None) -> Splits:
    """Split off `val_size` stratified validation images (below 1: that fraction of the training set), then keep
    the first `train_limit` of the rest.

    The validation set depends only on the data, `val_size` and `seed`, never on `train_limit`, so quick runs and
    full runs are validated on the same images.
    """
    total = len(data.y_train)
    val_size = count_of(val_size, total)
    if val_size < 0 or not 0 <= seed < 2**32:
        raise CnnlabError(f"validation size must be >= 0 and the seed in 0..2**32-1 (got {val_size}, {seed})")
    if val_size >= total:
        raise CnnlabError(f"validation size {val_size} leaves no training images (the training set has {total})")
    val_index = stratified_sample(data.y_train, val_size, seed)
    keep = np.ones(total, dtype=bool)
    keep[val_index] = False
    train_index = np.flatnonzero(keep)  # original order, so "the first N" means the same thing every time
    if train_limit is not None:
        if train_limit > len(train_index):
            raise CnnlabError(
                f"train limit {train_limit} exceeds the {len(train_index)} training images left after validation"
            )
        train_index = train_index[:train_limit]
    return Splits(
        x_train=data.x_train[train_index],
        y_train=data.y_train[train_index],
        x_val=data.x_train[val_index],
        y_val=data.y_train[val_index],
        x_test=data.x_test,
        y_test=data.y_test,
        class_names=data.class_names,
    )
