"""Model builders, found by name: `build_model(config.model, ...)` is all the rest of cnnlab calls."""

from __future__ import annotations

from typing import Callable

import keras

from cnnlab.config import ModelConfig
from cnnlab.models.cnn import build_cnn

BUILDERS: dict[str, Callable[..., keras.Model]] = {"cnn": build_cnn}


def build_model(config: ModelConfig, num_classes: int, image_shape: tuple[int, int, int] = (32, 32, 3)) -> keras.Model:
    """A model that takes raw 0-255 RGB images of `image_shape` and returns class probabilities."""
    return BUILDERS[config.name](config, num_classes, image_shape)
