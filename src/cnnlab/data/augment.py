"""Training-time augmentation on uint8 batches: mirror images and shift them by a few pixels.

Both are seeded by (seed, epoch, batch), never by the model, so a resumed run sees exactly the batches it would
have seen. Mirroring alternates: each image is flipped in every other epoch, on a seeded phase of its own, which
covers both orientations of every image twice as evenly as flipping at random each epoch (Jordan, 2024).
"""

from __future__ import annotations

import numpy as np


class Augmentation:
    def __init__(self, images: np.ndarray, seed: int, flip: bool, translate: int):
        self.flip, self.translate = flip, translate
        self.flip_phase = _flip_phases(seed, len(images))
        # Padded once, reflecting the border, so each shifted crop is only an index away.
        pad = ((0, 0), (translate, translate), (translate, translate), (0, 0))
        self.padded = np.pad(images, pad, mode="reflect") if translate else images
        self.height, self.width = images.shape[1:3]

    def __call__(self, indices: np.ndarray, rng: np.random.Generator, epoch: int) -> np.ndarray:
        """The augmented images at `indices` of the training set."""
        if self.translate:
            rows = rng.integers(0, 2 * self.translate + 1, size=len(indices))[:, None] + np.arange(self.height)
            cols = rng.integers(0, 2 * self.translate + 1, size=len(indices))[:, None] + np.arange(self.width)
            images = self.padded[indices[:, None, None], rows[:, :, None], cols[:, None, :]]
        else:
            images = self.padded[indices]
        if self.flip:
            flipped = _mirrored(self.flip_phase, indices, epoch)
            images[flipped] = images[flipped, :, ::-1]
        return images


class MirroredViews:
    """Flips for a model trained on cached features: the features of each training image and of its mirror image,
    both computed once, served on exactly the schedule `Augmentation` flips the images on (same seed), so a
    cached-features phase sees each image in the orientation the image pipeline would have shown it."""

    def __init__(self, features: np.ndarray, mirrored_features: np.ndarray, seed: int):
        self.features, self.mirrored_features = features, mirrored_features
        self.flip_phase = _flip_phases(seed, len(features))

    def __call__(self, indices: np.ndarray, rng: np.random.Generator, epoch: int) -> np.ndarray:
        views = self.features[indices]
        flipped = _mirrored(self.flip_phase, indices, epoch)
        views[flipped] = self.mirrored_features[indices[flipped]]
        return views


def _flip_phases(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, 1]).random(count) < 0.5


def _mirrored(flip_phase: np.ndarray, indices: np.ndarray, epoch: int) -> np.ndarray:
    """Which of the images at `indices` are mirrored in `epoch`: each in every other epoch, on its own phase."""
    return flip_phase[indices] ^ bool(epoch % 2)
