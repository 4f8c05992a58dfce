"""Model builders, found by name: `build_model(config, ...)` is all the rest of cnnlab calls."""

from __future__ import annotations

import keras

from cnnlab.config import RunConfig
from cnnlab.models.cnn import build_cnn
from cnnlab.models.vgg16 import build_vgg16, vgg16_label


def build_model(config: RunConfig, num_classes: int, image_shape: tuple[int, int, int] = (32, 32, 3)) -> keras.Model:
    """A model that takes raw 0-255 RGB images of `image_shape` and returns class probabilities."""
    if config.model == "vgg16":
        return build_vgg16(config.vgg16, num_classes, image_shape, seed=config.train.seed)
    return build_cnn(config.cnn, num_classes, image_shape)


def model_label(config: RunConfig) -> str:
    """The name a person sees in tables and figures."""
    return vgg16_label(config.vgg16) if config.model == "vgg16" else "CNN from scratch"
