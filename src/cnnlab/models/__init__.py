"""Model builders, found by name: `build_model(config, ...)` is all the rest of cnnlab calls."""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from cnnlab import system_info
from cnnlab.config import RunConfig
from cnnlab.models.cnn import build_cnn, check_cnn_image_size
from cnnlab.models.fastnet import build_fastnet, check_fastnet_image_size, fit_input_layers
from cnnlab.models.vgg16 import build_vgg16, vgg16_label


def build_model(config: RunConfig, num_classes: int, image_shape: tuple[int, int, int] = (32, 32, 3)) -> keras.Model:
    """A model that takes raw 0-255 RGB images of `image_shape` and returns float32 class probabilities.

    Layers compute in the precision `config.train.precision` resolves to; the model keeps that choice when saved.
    """
    check_image_size(config, image_shape)
    with _dtype_policy(resolve_precision(config.train.precision)):
        if config.model == "vgg16":
            return build_vgg16(config.vgg16, num_classes, image_shape, seed=config.train.seed)
        if config.model == "fastnet":
            return build_fastnet(config.fastnet, num_classes, image_shape, seed=config.train.seed)
        return build_cnn(config.cnn, num_classes, image_shape)


def check_image_size(config: RunConfig, image_shape: tuple[int, int, int]) -> None:
    """Refuse, in one line, a model whose poolings would shrink images of `image_shape` to nothing."""
    size = min(image_shape[:2])
    if config.model == "cnn":
        check_cnn_image_size(config.cnn, size)
    elif config.model == "fastnet":
        check_fastnet_image_size(config.fastnet, size)
    # VGG16 resizes any input to its own vgg16.image_size (32 px or more) inside the model.


def prepare_with_data(model: keras.Model, config: RunConfig, train_images: np.ndarray) -> None:
    """Set the parts of a fresh model that are computed from the training images rather than learned."""
    if config.model == "fastnet":
        fit_input_layers(model, train_images)


def resolve_precision(precision: str) -> str:
    """"auto" becomes "bfloat16" on a CPU with native bfloat16 math, "float32" anywhere else."""
    if precision != "auto":
        return precision
    return "bfloat16" if system_info.native_bfloat16() else "float32"


@contextlib.contextmanager
def _dtype_policy(precision: str):
    # Mixed precision: weights stay float32, layers compute in bfloat16; each output layer asks for float32 itself.
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def model_label(config: RunConfig) -> str:
    """The name a person sees in tables and figures."""
    if config.model == "fastnet":
        return "fast net from scratch"
    return vgg16_label(config.vgg16) if config.model == "vgg16" else "CNN from scratch"
