"""A progress bar for a long `predict` pass (the frozen layers' features, test-time augmentation, corruptions): drawn
through tqdm on a terminal only, and only once the pass has run for a few seconds, so quick passes and logs stay
quiet."""

from __future__ import annotations

import math
import sys

import keras
from tqdm import tqdm

BAR_AFTER_SECONDS = 3.0  # a pass that ends sooner shows no bar


class PassProgress(keras.callbacks.Callback):
    """A bar over the batches of `predict` passes totalling `batches` batches, named `what`; pass it to each
    `predict` as a callback, and `close` it after the last."""

    def __init__(self, what: str, batches: int, stream=None, delay: float = BAR_AFTER_SECONDS):
        super().__init__()
        self.bar = tqdm(total=batches, desc=what, unit="batch", delay=delay, disable=None, leave=False,
                        file=stream or sys.stderr)  # disable=None: off where the stream is not a terminal

    def on_predict_batch_end(self, batch, logs=None):
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def batches_of(images: int, batch_size: int) -> int:
    return math.ceil(images / batch_size)
