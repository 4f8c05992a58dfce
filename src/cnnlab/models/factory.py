"""The one place where a run's models are made: built, split for cached features, compiled and reloaded.

A distribution strategy (tf.distribute) or layout (keras.distribution) has to see every model of a run, and its
optimizer, created inside its scope; mixed precision, and how convolutions compute their gradients
(models/convolution.py), have to be set while layers are created. `ModelFactory` does all that, for every model a run
makes, as its `Placement` (cnnlab.backends) says.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras

from cnnlab.backends import placement_for
from cnnlab.config import RunConfig
from cnnlab.models import check_image_size
from cnnlab.models.convolution import gradients_by_convolution
from cnnlab.models.kind import Phase
from cnnlab.models.recipe import compile_for_phase
from cnnlab.models.registry import kind_of
from cnnlab.models.saving import load_model

# Keras's mixed policies keep weights in float32 and compute in the lower precision; under mixed_float16 Keras's
# compile wraps the optimizer in a LossScaleOptimizer, as float16 gradients underflow without loss scaling.
PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class ModelFactory:
    """Every model of one run, made in the placement's scope and precision."""

    def __init__(self, config: RunConfig, placement):
        self.config, self.placement = config, placement
        self.kind = kind_of(config)

    @contextlib.contextmanager
    def _placed(self):
        previous = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_dtype_policy(PRECISION_POLICIES[self.placement.precision])
        try:
            with self.placement.scope(), gradients_by_convolution(self.placement.convolution_gradients):
                yield
        finally:  # the global policy is left as it was: other models in this process are not this run's
            keras.mixed_precision.set_dtype_policy(previous)

    def build(self, num_classes: int, image_shape: tuple[int, int, int]) -> keras.Model:
        """The run's model, fresh (seed Keras first for a repeatable one). Each output layer asks for float32."""
        check_image_size(self.config, image_shape)
        with self._placed():
            return self.kind.build(self.config, num_classes, image_shape)

    def cached_feature_models(self, model: keras.Model, phase: Phase) -> tuple[keras.Model, keras.Model]:
        """`model` split for `phase`: a feature extractor and the rest, which trains on its features (same layers)."""
        with self._placed():
            return phase.cached_features(model)

    def compile(self, model: keras.Model, learning_rate: float, total_steps: int) -> None:
        """Compile `model` (the run's model or the part above cached features) with the recipe, for a phase of
        `total_steps` steps."""
        with self.placement.scope():
            compile_for_phase(model, self.config, learning_rate, total_steps, self.placement)

    def load(self, path: Path) -> keras.Model:
        """A model this run saved (its best checkpoint), read safely; it keeps the precision it was saved in."""
        with self.placement.scope():
            return load_model(path)


def build_model(config, num_classes: int, image_shape: tuple[int, int, int], placement=None):
    """A model that takes raw 0-255 RGB images of `image_shape` and returns float32 class probabilities.

    Built by `ModelFactory` in the precision and scope of `placement` (a `cnnlab.backends.Placement`; by default the
    one `config` gets in this process); the model keeps that precision when saved.
    """
    return ModelFactory(config, placement or placement_for(config)).build(num_classes, image_shape)
