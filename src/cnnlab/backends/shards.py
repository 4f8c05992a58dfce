"""Batches as data-parallel training must read them: a whole number of images per device, a part per process.

TensorFlow's MirroredStrategy and JAX's DataParallel both split each batch into equal parts, one per device; a batch
that does not divide fails (TensorFlow: "Inputs to operation AddN ... must have the same size and shape"; JAX: an
IndivisibleError). cnnlab asks for a batch size that divides by the devices (`backends.placement_for`), so only an
epoch's last batch and the validation set's tail can be uneven; they lose at most devices - 1 images. With several
processes (JAX), each process feeds its own part of every batch, so the global batch stays the preset's.
"""

from __future__ import annotations

import keras
import numpy as np


class WholeShards(keras.utils.PyDataset):
    """`batches` (a `data.batches.ShuffledBatches`), each batch cut to a whole number of images per device and to
    this process's part of it."""

    def __init__(self, batches, devices: int, process_index: int = 0, process_count: int = 1):
        super().__init__()
        self.batches, self.devices = batches, devices
        self.process_index, self.process_count = process_index, process_count
        # what the tf.data pipeline reads to type its batches
        self.x, self.num_classes, self.batch_size = batches.x, batches.num_classes, batches.batch_size

    def __len__(self) -> int:
        last = len(self.batches.x) % self.batches.batch_size
        return len(self.batches) - (0 < last < self.devices)  # a last batch smaller than the devices is left out

    def __getitem__(self, index: int):
        images, labels = self.batches[index]
        part = (len(images) - len(images) % self.devices) // self.process_count
        start = self.process_index * part
        return images[start:start + part], labels[start:start + part]

    def on_epoch_end(self):
        self.batches.on_epoch_end()


def whole_shards(x: np.ndarray, y: np.ndarray, devices: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels cut to a whole number per device."""
    keep = len(x) - len(x) % devices
    return x[:keep], y[:keep]
