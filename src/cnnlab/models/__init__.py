"""Models, found by name: `kind_of(config)` answers what cnnlab asks of a run's kind of model, and
`models.factory.build_model(config, ...)` builds one.

Importing this package imports no Keras and nothing of cnnlab's config (which builds its sections from `KINDS`);
building a model does (`factory`, each kind's `network.py`).
"""

from __future__ import annotations

from cnnlab.models.kind import ModelKind, Phase
from cnnlab.models.registry import KINDS, check_model_list, compared_kinds, kind_of

__all__ = ["KINDS", "check_model_list", "compared_kinds", "ModelKind", "Phase", "check_image_size", "kind_of",
           "model_label", "prepare_with_data"]


def check_image_size(config, image_shape: tuple[int, int, int]) -> None:
    """Refuse, in one line, a model whose poolings would shrink images of `image_shape` to nothing."""
    kind_of(config).check_image_size(config, min(image_shape[:2]))


def prepare_with_data(model, config, train_images) -> None:
    """Set the parts of a fresh model that are computed from the training images rather than learned."""
    kind_of(config).prepare_with_data(model, train_images)


def model_label(config) -> str:
    """The name a person sees in tables and figures."""
    return kind_of(config).label(config)
