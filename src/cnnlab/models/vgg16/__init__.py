"""VGG16 for transfer learning: a pretrained convolutional base (ImageNet's, or a local weights file), a new dense head
for the data's classes, trained in two phases (the head alone, then the top blocks fine-tuned).

This module declares the kind (its settings, its label and `KIND`) without Keras; `network.py` builds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cnnlab.common.settings import FRACTION, LEARNING_RATE, MAX_EPOCHS, MAX_LAYER_WIDTH, MAX_LAYERS, Range, setting
from cnnlab.models.kind import ModelKind, network_of

# The filters of each conv in each of VGG16's blocks, as keras.applications.VGG16 builds them.
BLOCK_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
NUM_BLOCKS = len(BLOCK_WIDTHS)
HEAD_POOLINGS = ("flatten", "avg")


@dataclass(frozen=True)
class Vgg16Config:
    weights: str = "imagenet"  # "imagenet" (Keras download and cache), "none" (random init) or a local .h5 path
    # Images are upscaled to this inside the model (VGG16 needs 32x32 or more); ImageNet features like larger inputs
    image_size: int = setting(32, bounds=Range(32, 1024))
    # The head sits on this conv block's output (1-5); the blocks above it are left out. A trunk's top block is its
    # most task-specific: for a trunk tuned on another task a lower block can transfer better (measure it).
    top_block: int = setting(NUM_BLOCKS, bounds=Range(1, NUM_BLOCKS))
    head_pooling: str = setting("flatten", choices=HEAD_POOLINGS)  # over the top block's feature map
    # BatchNormalization on the head's input: frozen features differ in scale by orders of magnitude between trunks
    head_batch_norm: bool = False
    head_units: tuple[int, ...] = setting((256,), bounds=Range(1, MAX_LAYER_WIDTH), entries=Range(0, MAX_LAYERS))
    head_dropout: float = setting(0.5, bounds=FRACTION)
    # The blocks frozen in both phases run once per image (and mirror image), not once per epoch; not with translate
    feature_cache: bool = True
    # Phase 1, the head alone; None: train.epochs, as the CNN (the tutorial's recipe)
    head_epochs: int | None = setting(None, bounds=Range(1, MAX_EPOCHS))
    # Phase 2 trains the last N conv blocks up to top_block; 0 skips phase 2
    unfreeze_blocks: int = setting(1, bounds=Range(0, NUM_BLOCKS))
    finetune_epochs: int = setting(5, bounds=Range(0, MAX_EPOCHS))
    finetune_learning_rate: float = setting(1e-5, bounds=LEARNING_RATE)


def vgg16_label(config: Vgg16Config) -> str:
    """How tables and figures name a VGG16 run: a random start is never called fine-tuned, nor a frozen base."""
    blocks = "" if config.top_block == NUM_BLOCKS else f" to block {config.top_block}"
    if config.weights == "none":
        return f"VGG16{blocks} from scratch"
    source = "ImageNet" if config.weights == "imagenet" else Path(config.weights).name
    if config.unfreeze_blocks and config.finetune_epochs:
        return f"VGG16{blocks} fine-tuned ({source})"
    return f"VGG16{blocks} on frozen {source} features"


def _clashes(settings: Vgg16Config) -> list[str]:
    if settings.unfreeze_blocks <= settings.top_block:
        return []
    return [f"vgg16.unfreeze_blocks ({settings.unfreeze_blocks}) cannot exceed vgg16.top_block "
            f"({settings.top_block}), the blocks the model keeps"]


def _caveat(config) -> str | None:
    if config.vgg16.weights != "none":
        return None
    return "VGG16 here started from random weights, not ImageNet: this is no test of transfer learning."


KIND = ModelKind(
    name="vgg16",
    settings=Vgg16Config,
    build=lambda config, classes, shape: network_of("vgg16").build_vgg16(config.vgg16, classes, shape,
                                                                      seed=config.train.seed),
    tally=lambda config, classes, shape: network_of("vgg16").tally_vgg16(config.vgg16, classes, shape),
    label=lambda config: vgg16_label(config.vgg16),
    # No image-size check: VGG16 resizes any input to its own vgg16.image_size (32 px or more) inside the model.
    phases=lambda config: network_of("vgg16").phases(config),
    weights=lambda config: config.vgg16.weights,
    # Loading them is the check: a missing or mismatched file fails.
    check_weights=lambda config: network_of("vgg16").build_vgg16_base(config.vgg16),
    without_downloads=lambda config: dataclasses.replace(config, vgg16=dataclasses.replace(config.vgg16,
                                                                                           weights="none")),
    caveat=_caveat,
    check_settings=_clashes,
    flags={
        "--weights": ("vgg16.weights", str, "VGG16 weights: imagenet (Keras download and cache), none, or a .h5 path",
                      (), "imagenet|none|PATH"),
        "--vgg16-image-size": ("vgg16.image_size", int, "VGG16 input size; images are upscaled inside the model "
                                                        "(>= 32)", ("--vgg16-size",)),
    },
)
