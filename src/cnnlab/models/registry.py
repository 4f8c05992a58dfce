"""Every kind of model cnnlab trains, found by name: `kind_of(config)` answers all the rest of cnnlab asks of one.

One `ModelKind` per kind (timm's `create_model` registry, kept to a dict): its builder, its image-size check, its
training phases, its label, what it computes from the data before training, the custom objects that load it, and
what its weights started from. A new kind is one entry here and its own module beside the others.

This module imports no Keras (seconds to import): a report asks a kind only how its run started, so each kind's
Keras-side pieces are looked up in its module on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from cnnlab.config import RunConfig


@dataclass(frozen=True)
class Phase:
    """One stretch of training with one learning rate and one set of trainable layers."""

    name: str
    epochs: int
    learning_rate: float
    prepare: Callable  # (model) -> None: sets which layers train in this phase
    # (model) -> (feature extractor, the rest of the model) where the phase trains the rest on features computed once
    cached_features: Callable | None = None


def one_phase(config: RunConfig) -> list[Phase]:
    """The recipe of a model trained from scratch: every layer, the configured epochs and learning rate."""
    return [Phase("train", config.train.epochs, config.train.learning_rate, prepare=_nothing)]


def _nothing(*args) -> None:
    return None


@dataclass(frozen=True)
class ModelKind:
    name: str
    build: Callable  # (config, num_classes, image_shape) -> keras.Model taking raw 0-255 images, in the set precision
    tally: Callable  # (config, num_classes, image_shape) -> footprint.Tally: the model counted without building it
    label: Callable[[RunConfig], str]  # the name a person sees in tables and figures
    check_image_size: Callable = _nothing  # (config, image_size): a one-line CnnlabError if the images are too small
    phases: Callable[[RunConfig], list[Phase]] = one_phase
    prepare_with_data: Callable = _nothing  # (model, train_images): set what is computed from the data, not learned
    custom_objects: Callable[[], dict] = dict  # what keras.saving needs to load its training checkpoints
    weights: Callable[[RunConfig], str | None] = _nothing  # where the weights started; None: at random, always
    check_weights: Callable[[RunConfig], None] = _nothing  # fails now if the starting weights cannot be had
    caveat: Callable[[RunConfig], str | None] = _nothing  # a sentence a report adds about a run of this kind


def _module(name: str):
    return importlib.import_module(f"cnnlab.models.{name}")


def _check_vgg16_weights(config: RunConfig) -> None:
    _module("vgg16").build_vgg16_base(config.vgg16)  # loading them is the check: a missing or mismatched file fails


def _vgg16_caveat(config: RunConfig) -> str | None:
    if config.vgg16.weights != "none":
        return None
    return "VGG16 here started from random weights, not ImageNet: this is no test of transfer learning."


KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind(
        name="cnn",
        build=lambda config, classes, shape: _module("cnn").build_cnn(config.cnn, classes, shape),
        tally=lambda config, classes, shape: _module("cnn").tally_cnn(config.cnn, classes, shape),
        label=lambda config: "CNN from scratch",
        check_image_size=lambda config, size: _module("cnn").check_cnn_image_size(config.cnn, size),
    ),
    ModelKind(
        name="vgg16",
        build=lambda config, classes, shape: _module("vgg16").build_vgg16(config.vgg16, classes, shape,
                                                                         seed=config.train.seed),
        tally=lambda config, classes, shape: _module("vgg16").tally_vgg16(config.vgg16, classes, shape),
        label=lambda config: _module("vgg16").vgg16_label(config.vgg16),
        # No image-size check: VGG16 resizes any input to its own vgg16.image_size (32 px or more) inside the model.
        phases=lambda config: _module("vgg16").phases(config),
        weights=lambda config: config.vgg16.weights,
        check_weights=_check_vgg16_weights,
        caveat=_vgg16_caveat,
    ),
    ModelKind(
        name="fastnet",
        build=lambda config, classes, shape: _module("fastnet").build_fastnet(config.fastnet, classes, shape,
                                                                             seed=config.train.seed),
        tally=lambda config, classes, shape: _module("fastnet").tally_fastnet(config.fastnet, classes, shape),
        label=lambda config: "fast net from scratch",
        check_image_size=lambda config, size: _module("fastnet").check_fastnet_image_size(config.fastnet, size),
        prepare_with_data=lambda model, images: _module("fastnet").fit_input_layers(model, images),
        custom_objects=lambda: {"cnnlab>ScaledBias": _module("fastnet").ScaledBias},
    ),
)}

# What `cnnlab compare` trains, under the first kind's preset: a net from scratch against transfer learning.
COMPARED_KINDS = ("cnn", "vgg16")


def kind_of(config: RunConfig) -> ModelKind:
    """The kind `config.model` names (config.py accepts only these names)."""
    return KINDS[config.model]
