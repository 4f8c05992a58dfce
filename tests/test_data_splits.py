import numpy as np
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.data.dataset import Dataset, SourceRecord
from cnnlab.data.sampling import stratified_sample
from cnnlab.data.splits import make_splits


def tiny_dataset(train=1000, test=200, classes=10):
    labels = np.arange(train) % classes
    images = np.zeros((train, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(train) % 256  # lets a test see which images went where
    images[:, 0, 0, 1] = np.arange(train) // 256
    record = SourceRecord(kind="memory", path="memory", content_hash=None, hash_status="test", image_size=32,
                          classes=tuple(f"c{i}" for i in range(classes)))
    return Dataset(x_train=images, y_train=labels.astype(np.uint8), x_test=np.zeros((test, 32, 32, 3), np.uint8),
                   y_test=(np.arange(test) % classes).astype(np.uint8), record=record)


def image_ids(images):
    return set((images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)).tolist())


def test_validation_is_stratified_disjoint_and_seeded():
    data = tiny_dataset()
    splits = make_splits(data, val_size=100, seed=3)
    assert np.bincount(splits.y_val).tolist() == [10] * 10
    assert len(splits.y_train) == 900
    assert image_ids(splits.x_train).isdisjoint(image_ids(splits.x_val))
    assert image_ids(make_splits(data, 100, seed=3).x_val) == image_ids(splits.x_val)
    assert image_ids(make_splits(data, 100, seed=4).x_val) != image_ids(splits.x_val)


def test_test_set_is_untouched():
    data = tiny_dataset()
    splits = make_splits(data, val_size=100, seed=0, train_limit=50)
    assert splits.x_test is data.x_test and splits.y_test is data.y_test


def test_train_limit_keeps_the_first_images_and_the_same_validation_set():
    data = tiny_dataset()
    full = make_splits(data, val_size=100, seed=0)
    limited = make_splits(data, val_size=100, seed=0, train_limit=50)
    assert image_ids(limited.x_val) == image_ids(full.x_val)
    np.testing.assert_array_equal(limited.x_train, full.x_train[:50])


def test_uneven_classes_get_proportional_quotas():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    chosen = stratified_sample(labels, 10, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [7, 2, 1]
    assert len(stratified_sample(labels, 7, seed=0)) == 7


def test_zero_validation_images():
    splits = make_splits(tiny_dataset(), val_size=0, seed=0)
    assert len(splits.y_val) == 0 and len(splits.y_train) == 1000


def test_impossible_sizes_are_refused():
    with pytest.raises(CnnlabError, match="leaves no training images"):
        make_splits(tiny_dataset(), val_size=1000, seed=0)
    with pytest.raises(CnnlabError, match="train limit 901 exceeds the 900"):
        make_splits(tiny_dataset(), val_size=100, seed=0, train_limit=901)


def test_a_fractional_validation_size_is_that_share_of_the_training_set():
    data = tiny_dataset()
    assert len(make_splits(data, val_size=0.1, seed=0).y_val) == round(0.1 * len(data.y_train))
    by_fraction = make_splits(data, val_size=0.1, seed=0)
    by_count = make_splits(data, val_size=round(0.1 * len(data.y_train)), seed=0)
    assert (by_fraction.y_val == by_count.y_val).all()
