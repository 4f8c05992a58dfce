"""Training batches: a fresh seeded order each epoch, one-hot labels made per batch, optional augmentation.

Shared by training (through `backends.fit_input`), the tf.data pipeline (`backends/tensorflow.py`) and `cnnlab bench`.
"""

from __future__ import annotations

import keras
import numpy as np

from cnnlab.data.augment import Augmentation


class ShuffledBatches(keras.utils.PyDataset):
    """Batches in a fresh seeded order each epoch, one-hot labels made per batch, optionally augmented.

    The order (and the augmentation) depends only on the seed and the epoch, never on the model, so training on
    images and training on their cached features see exactly the same batches, and so does a resumed run.
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int, epoch: int = 0,
                 augmentation: Augmentation | None = None):
        super().__init__()
        self.x, self.labels, self.num_classes, self.batch_size = x, labels, num_classes, batch_size
        self.seed, self.epoch, self.augmentation = seed, epoch, augmentation
        self._order_epoch, self._order = None, None

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order_epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))
        return self._order

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def batch(self, epoch: int, index: int):
        """Batch `index` of `epoch`: images and one-hot labels."""
        chosen = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        if self.augmentation is None:
            images = self.x[chosen]
        else:
            images = self.augmentation(chosen, np.random.default_rng([self.seed, epoch, index]), epoch)
        return images, one_hot(self.labels[chosen], self.num_classes)

    def __getitem__(self, index: int):
        return self.batch(self.epoch, index)

    def on_epoch_end(self):
        self.epoch += 1


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype="float32")[np.asarray(labels, dtype=int)]
