"""A trained model rebuilt from Keras's own layers, with its weights and without its optimizer: what model.keras holds,
so that it loads with plain `keras.saving.load_model` in a process that has imported nothing of cnnlab."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np


def keras_copy(model: keras.Model, clone_layer: Callable | None = None,
               weights_of: Callable[[keras.layers.Layer], list[np.ndarray] | None] | None = None) -> keras.Model:
    """`model` cloned layer by layer (`clone_layer(layer)`, default: its `keras_class` from its config) with the weights
    `weights_of(layer)` gives each layer that has some (default: its own; None: the clone keeps its fresh ones)."""
    clone_layer = clone_layer or (lambda layer: keras_class(layer).from_config(layer.get_config()))
    weights_of = weights_of or (lambda layer: layer.get_weights())
    # recursive: a nested model (a transfer model's trunk) is cloned layer by layer too, each through `clone_layer`
    cloned = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    copy = keras.Model(cloned.inputs, cloned.outputs, name=model.name)  # the clone is compiled like the original
    for layer in model.layers:
        weights = weights_of(layer) if layer.weights else None
        if weights is not None:
            copy.get_layer(layer.name).set_weights(weights)
    return copy


def keras_class(layer: keras.layers.Layer) -> type:
    """The Keras class that computes what `layer` computes: its own, or the `portable_class` of a layer that differs
    from it only in training (models/convolution.py)."""
    return getattr(layer, "portable_class", type(layer))
