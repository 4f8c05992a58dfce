"""Plain CNNs: stacks of conv blocks, then dense layers, then a softmax.

Each block is `len(filters)` times [Conv2D 3x3 -> optional BatchNorm -> ReLU], then 2x2 max pooling and optional
dropout. The `seed` preset's two blocks of (32, 32) and (64, 64) filters with dense 512 are the tutorial's model.
"""

from __future__ import annotations

import keras

from cnnlab.common.errors import CnnlabError
from cnnlab.models.cnn import CnnConfig
from cnnlab.models.convolution import same_conv
from cnnlab.models.footprint import Tally, poolings_allowed


def build_cnn(config: CnnConfig, num_classes: int, image_shape: tuple[int, int, int]) -> keras.Model:
    inputs = keras.Input(shape=image_shape, name="image")
    # Scaling lives inside the model so that the saved model takes raw 0-255 images, whoever calls it.
    x = keras.layers.Rescaling(1.0 / 255, name="scale_to_unit")(inputs)
    for block_index, filters in enumerate(config.conv_blocks, start=1):
        for conv_index, width in enumerate(filters, start=1):
            name = f"block{block_index}_conv{conv_index}"
            # Without BatchNorm the conv keeps its bias; with it the bias is redundant (BatchNorm has its own).
            # He initialisation is the usual choice for ReLU layers (He et al., 2015); Keras defaults to Glorot.
            x = same_conv(width, 3, use_bias=not config.batch_norm, kernel_initializer="he_uniform", name=name)(x)
            if config.batch_norm:
                x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block_index}_pool")(x)
        if config.conv_dropout:
            x = keras.layers.Dropout(config.conv_dropout, name=f"block{block_index}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(config.dense_units, start=1):
        x = keras.layers.Dense(units, activation="relu", kernel_initializer="he_uniform", name=f"dense{index}")(x)
        if config.dense_dropout:
            x = keras.layers.Dropout(config.dense_dropout, name=f"dense{index}_dropout")(x)
    # float32 output whatever the compute dtype, so probabilities and the loss stay numerically sound.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def check_cnn_image_size(config: CnnConfig, image_size: int) -> None:
    """Refuse more conv blocks than the images can be halved: a pooling past 1 px leaves nothing to classify."""
    allowed = poolings_allowed(image_size)
    if len(config.conv_blocks) > allowed:
        raise CnnlabError(f"config: cnn.conv_blocks has {len(config.conv_blocks)} blocks; {image_size} px images allow "
                          f"at most {allowed} (each block halves the image)")


def tally_cnn(config: CnnConfig, num_classes: int, image_shape: tuple[int, int, int]) -> Tally:
    """The model `build_cnn` builds, counted layer by layer without building it."""
    tally = Tally(image_shape)
    tally.elementwise()  # scale_to_unit
    for filters in config.conv_blocks:
        for width in filters:
            tally.conv(width, bias=not config.batch_norm)
            if config.batch_norm:
                tally.batch_norm()
            tally.elementwise()  # ReLU
        tally.pool()
        if config.conv_dropout:
            tally.elementwise()
    tally.flatten()
    tally.classifier_head(config.dense_units, bool(config.dense_dropout), num_classes)
    return tally
