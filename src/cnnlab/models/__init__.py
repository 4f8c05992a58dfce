"""Models, found by name: `build_model(config, ...)` builds one, `kind_of(config)` answers what else cnnlab asks.

Importing this package imports no Keras (a report asks only `kind_of`); building a model does.
"""

from __future__ import annotations

from cnnlab.models.registry import COMPARED_KINDS, KINDS, ModelKind, Phase, kind_of

__all__ = ["COMPARED_KINDS", "KINDS", "ModelKind", "Phase", "build_model", "check_image_size", "kind_of",
           "model_label", "prepare_with_data"]


def build_model(config, num_classes: int, image_shape: tuple[int, int, int] = (32, 32, 3), placement=None):
    """A model that takes raw 0-255 RGB images of `image_shape` and returns float32 class probabilities.

    Built by `ModelFactory` in the precision and scope of `placement` (a `cnnlab.backends.Placement`; by default the
    one `config` gets in this process); the model keeps that precision when saved.
    """
    from cnnlab.backends import placement_for
    from cnnlab.models.factory import ModelFactory

    return ModelFactory(config, placement or placement_for(config)).build(num_classes, image_shape)


def check_image_size(config, image_shape: tuple[int, int, int]) -> None:
    """Refuse, in one line, a model whose poolings would shrink images of `image_shape` to nothing."""
    kind_of(config).check_image_size(config, min(image_shape[:2]))


def prepare_with_data(model, config, train_images) -> None:
    """Set the parts of a fresh model that are computed from the training images rather than learned."""
    kind_of(config).prepare_with_data(model, train_images)


def model_label(config) -> str:
    """The name a person sees in tables and figures."""
    return kind_of(config).label(config)
