"""What a model kind declares: `ModelKind`, everything the rest of cnnlab asks of one, and `Phase`, one stretch of
its training.

A kind is declared under `models/`, in its own package (`models/cnn/`, `models/fastnet/`) or, for a pretrained
backbone, as a `transfer.Backbone` made a kind by `transfer.transfer_kind` (`models/vgg16/`, `models/applications/`,
`models/efficientnet_lite0/`). A declaration (its settings section, with defaults and bounds, and a `KIND`) imports
no Keras and nothing of cnnlab's config, so that `cnnlab.config` can build its tables from the kinds; the Keras side
(`<kind>/network.py`, `transfer/network.py`) is imported only when a model is built. A new kind is one such
declaration, one line in `models/registry.py`, a preset and a test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
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
    return [Phase("train", config.train.epochs, config.train.learning_rate, prepare=nothing)]


def nothing(*args) -> None:
    return None


def unchanged(config: RunConfig) -> RunConfig:
    return config


def no_problems(section) -> list[str]:
    return []


def network_of(kind: str):
    """The Keras side of `kind` (`models/<kind>/network.py`), imported on first use: it imports Keras."""
    return importlib.import_module(f"cnnlab.models.{kind}.network")


@dataclass(frozen=True)
class ModelKind:
    name: str  # also the name of its settings section: `config.<name>`, `[<name>]` in a preset
    settings: type  # the settings section: a frozen dataclass of `common.settings.setting` fields
    build: Callable  # (config, num_classes, image_shape) -> keras.Model taking raw 0-255 images, in the set precision
    tally: Callable  # (config, num_classes, image_shape) -> footprint.Tally: the model counted without building it
    label: Callable[[RunConfig], str]  # the name a person sees in tables and figures
    check_image_size: Callable = nothing  # (config, image_size): a one-line CnnlabError if the images are too small
    phases: Callable[[RunConfig], list[Phase]] = one_phase
    prepare_with_data: Callable = nothing  # (model, train_images): set what is computed from the data, not learned
    # (model) -> the same function from Keras's own layers, for model.keras; None: every layer is Keras's already
    portable_copy: Callable | None = None
    custom_objects: Callable[[], dict] = dict  # what keras.saving needs to load its training checkpoints
    weights: Callable[[RunConfig], str | None] = nothing  # where the weights started; None: at random, always
    check_weights: Callable[[RunConfig], None] = nothing  # fails now if the starting weights cannot be had
    # The config to rebuild the architecture alone (to resume: the weights come back from the saved state)
    without_downloads: Callable[[RunConfig], RunConfig] = unchanged
    caveat: Callable[[RunConfig], str | None] = nothing  # a sentence a report adds about a run of this kind
    # (settings section) -> problems its declared rules cannot express (how values combine, nested lists); asked
    # only once every value of the config keeps its declared rules
    check_settings: Callable[[Any], list[str]] = no_problems
    # Command-line flags of its settings: flag -> (dotted setting, type, help[, older names[, placeholder]])
    flags: dict[str, tuple] = field(default_factory=dict)
    # The pretrained trunk it transfers from (a `models.transfer.Backbone`); None: it trains from scratch alone
    backbone: Any = None
