"""Training batches: a seeded reshuffle each epoch, one-hot labels, augmentation that depends only on seed and epoch."""

import numpy as np

from cnnlab.data.augment import Augmentation
from cnnlab.data.batches import ShuffledBatches
from conftest import learnable_splits


def test_batches_are_a_seeded_reshuffle_each_epoch():
    labels = np.arange(10) % 3
    batches = ShuffledBatches(np.arange(10)[:, None], labels, num_classes=3, batch_size=4, seed=7)
    assert len(batches) == 3

    def epoch():
        seen = [batches[i] for i in range(len(batches))]
        batches.on_epoch_end()
        return np.concatenate([x[:, 0] for x, _ in seen]), seen[0][1]

    first, one_hot = epoch()
    second, _ = epoch()
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10)) and list(first) != list(second)
    np.testing.assert_array_equal(one_hot, np.eye(3)[labels[first[:4]]])
    again = ShuffledBatches(np.arange(10)[:, None], labels, num_classes=3, batch_size=4, seed=7)
    np.testing.assert_array_equal(np.concatenate([again[i][0][:, 0] for i in range(3)]), first)


def test_augmented_batches_depend_only_on_seed_and_epoch():
    splits = learnable_splits(train=100)
    augmentation = Augmentation(splits.x_train, seed=3, flip=True, translate=2)
    first = ShuffledBatches(splits.x_train, splits.y_train, 10, 32, seed=3, epoch=2, augmentation=augmentation)
    again = ShuffledBatches(splits.x_train, splits.y_train, 10, 32, seed=3, epoch=2, augmentation=augmentation)
    for index in range(len(first)):
        np.testing.assert_array_equal(first[index][0], again[index][0])
    plain = ShuffledBatches(splits.x_train, splits.y_train, 10, 32, seed=3, epoch=2)
    assert not np.array_equal(first[0][0], plain[0][0])
    np.testing.assert_array_equal(first[0][1], plain[0][1])  # same images, so the same labels
