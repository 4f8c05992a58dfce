"""Transfer learning from a pretrained backbone, one recipe for every backbone: `Backbone` says what a backbone is,
`transfer_kind` makes the model kind that trains it.

The recipe is the one the tutorial's VGG16 side follows, as practitioners fine-tune today: the backbone's own
preprocessing inside the model, the images upscaled to `image_size`, the backbone cut after block `top_block`, a
new head for the data's classes trained on the frozen backbone's features (computed once: the feature cache), then
the top `unfreeze_blocks` blocks fine-tuned at a low learning rate. A backbone's "blocks" are its resolution stages:
the stretches of its layers between two downsamplings (VGG's five conv blocks; ResNet's stages), each ending in a
tensor that every later layer depends on alone, where the model can be cut.

This module imports no Keras (see `models.kind`); `transfer/network.py` builds the models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab.common.settings import FRACTION, LEARNING_RATE, MAX_EPOCHS, MAX_LAYER_WIDTH, MAX_LAYERS, Range, setting
from cnnlab.models.kind import ModelKind, network_of

HEAD_POOLINGS = ("flatten", "avg")
MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True)
class Preprocessing:
    """A backbone's input normalisation of 0-255 RGB images, as one affine map per channel: the channels reordered
    (RGB to BGR for Caffe-trained nets), then `value * scale + offset`. keras.applications' "caffe", "tf" and
    "torch" modes, and EfficientNet-Lite's (x - 127) / 128, are all of this form."""

    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    bgr: bool = False


CAFFE = Preprocessing((1.0, 1.0, 1.0), (-103.939, -116.779, -123.68), bgr=True)  # minus ImageNet's BGR means
MINUS_ONE_TO_ONE = Preprocessing((1 / 127.5,) * 3, (-1.0,) * 3)  # keras.applications' "tf" mode
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's RGB mean and sd on 0-1 pixels
TORCH = Preprocessing(tuple(1 / (255 * sd) for sd in _STD), tuple(-mean / sd for mean, sd in zip(_MEAN, _STD)))


@dataclass(frozen=True)
class Backbone:
    """A pretrained convolutional trunk, as the transfer recipe needs it."""

    name: str  # the kind's name: `--model NAME`, its settings section `[NAME]`
    title: str  # how people write it: "ResNet50V2"
    blocks: int  # its resolution stages (see the module's docstring); tests check the count against the network
    # keras.applications' constructor, by name ("ResNet50V2"); None: the kind's own `network.py` builds the trunk
    application: str | None
    preprocessing: Preprocessing | None  # None: the trunk normalises its input itself (it takes 0-255 RGB)
    image_size: int  # the default size images are upscaled to inside the model
    min_image_size: int = 32  # keras.applications refuse smaller inputs
    # The layers that end each block, where the trunk has names that stay put (VGG's "block3_pool"); else the
    # blocks are found from the network's structure (`transfer.network.block_ends`)
    block_ends: tuple[str, ...] | None = None
    weights_note: str = "ImageNet's, through Keras's own download and hash check"
    offline_file: str = ""  # what to pass as --weights offline: the file Keras would download
    # The head and dropout a new head gets by default: VGG's tutorial head (flatten, dense 256, dropout 0.5), or a
    # linear classifier on pooled features, as modern backbones are fine-tuned (timm, Keras's guides)
    head_pooling: str = "avg"
    head_units: tuple[int, ...] = ()
    head_dropout: float = 0.2
    finetune_learning_rate: float = 1e-5  # phase 2's default
    # Whether pretrained ImageNet weights can be had without a download; None: only Keras's download gives them
    imagenet_offline: Callable[[], bool] | None = None
    # Whether its 3x3 convolutions take their gradients by forward convolutions where the run's placement says so
    # (models/convolution.py): only where that was measured faster for it
    gradients_by_convolution: bool = False


def transfer_settings(backbone: Backbone) -> type:
    """The settings section of `backbone`'s kind: every transfer setting, with the backbone's defaults and bounds."""
    fields = [
        # "imagenet" (pretrained ImageNet weights), "none" (random initialisation) or a local weights file (.h5)
        ("weights", str, dataclasses.field(default="imagenet")),
        # Images are upscaled to this inside the model; ImageNet features like larger inputs
        ("image_size", int, setting(backbone.image_size, bounds=Range(backbone.min_image_size, MAX_IMAGE_SIZE))),
        # The head sits on this block's output; the blocks above it are left out. A trunk's top block is its most
        # task-specific: for a trunk tuned on another task a lower block can transfer better (measure it).
        ("top_block", int, setting(backbone.blocks, bounds=Range(1, backbone.blocks))),
        ("head_pooling", str, setting(backbone.head_pooling, choices=HEAD_POOLINGS)),  # over the top block's map
        # BatchNormalization on the head's input: frozen features differ in scale by orders of magnitude between
        # trunks
        ("head_batch_norm", bool, dataclasses.field(default=False)),
        ("head_units", tuple[int, ...], setting(backbone.head_units, bounds=Range(1, MAX_LAYER_WIDTH),
                                                entries=Range(0, MAX_LAYERS))),
        ("head_dropout", float, setting(backbone.head_dropout, bounds=FRACTION)),
        # The blocks frozen in a phase run once per image (and mirror image), not once per epoch; not with translate
        ("feature_cache", bool, dataclasses.field(default=True)),
        # Phase 1, the head alone; None: train.epochs, as the CNN (the tutorial's recipe)
        ("head_epochs", int | None, setting(None, bounds=Range(1, MAX_EPOCHS))),
        # Phase 2 trains the last N blocks up to top_block; 0 skips phase 2
        ("unfreeze_blocks", int, setting(1, bounds=Range(0, backbone.blocks))),
        ("finetune_epochs", int, setting(5, bounds=Range(0, MAX_EPOCHS))),
        ("finetune_learning_rate", float, setting(backbone.finetune_learning_rate, bounds=LEARNING_RATE)),
    ]
    class_name = "".join(part.capitalize() for part in backbone.name.split("_")) + "Config"
    return dataclasses.make_dataclass(class_name, fields, frozen=True, namespace={"__module__": __name__})


def transfer_label(backbone: Backbone, settings) -> str:
    """How tables and figures name a run: a random start is never called fine-tuned, nor a frozen trunk."""
    blocks = "" if settings.top_block == backbone.blocks else f" to block {settings.top_block}"
    if settings.weights == "none":
        return f"{backbone.title}{blocks} from scratch"
    source = "ImageNet" if settings.weights == "imagenet" else Path(settings.weights).name
    if settings.unfreeze_blocks and settings.finetune_epochs:
        return f"{backbone.title}{blocks} fine-tuned ({source})"
    return f"{backbone.title}{blocks} on frozen {source} features"


def transfer_kind(backbone: Backbone, settings: type | None = None) -> ModelKind:
    """The model kind that trains `backbone` through the transfer recipe (its settings section: `settings`, else
    `transfer_settings(backbone)`)."""
    name = backbone.name

    def section(config):
        return getattr(config, name)

    def network():  # Keras: imported when a model is built
        return network_of("transfer")

    def clashes(values) -> list[str]:
        if values.unfreeze_blocks <= values.top_block:
            return []
        return [f"{name}.unfreeze_blocks ({values.unfreeze_blocks}) cannot exceed {name}.top_block "
                f"({values.top_block}), the blocks the model keeps"]

    def caveat(config) -> str | None:
        if section(config).weights != "none":
            return None
        return f"{backbone.title} here started from random weights, not ImageNet: this is no test of transfer learning."

    return ModelKind(
        name=name,
        settings=settings or transfer_settings(backbone),
        build=lambda config, classes, shape: network().build_transfer(backbone, section(config), classes, shape,
                                                                      seed=config.train.seed),
        tally=lambda config, classes, shape: network().tally_transfer(backbone, section(config), classes, shape),
        label=lambda config: transfer_label(backbone, section(config)),
        # No image-size check: the model resizes any input to its own image_size inside.
        phases=lambda config: network().phases(backbone, section(config), config),
        weights=lambda config: section(config).weights,
        # Loading them is the check: a missing or mismatched file fails.
        check_weights=lambda config: network().build_trunk(backbone, section(config)),
        without_downloads=lambda config: dataclasses.replace(
            config, **{name: dataclasses.replace(section(config), weights="none")}),
        caveat=caveat,
        check_settings=clashes,
        backbone=backbone,
    )
