"""The tutorial's kind of model: a plain CNN trained from scratch (conv blocks, then dense layers, then a softmax).

This module declares the kind (its settings and `KIND`) without Keras; `network.py` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.common.settings import FRACTION, MAX_LAYER_WIDTH, MAX_LAYERS, Range, setting
from cnnlab.models.kind import ModelKind, network_of

MAX_CONV_BLOCKS = 5  # each block halves the image: 32 px images allow five halvings


@dataclass(frozen=True)
class CnnConfig:
    # filters of each conv, block by block
    conv_blocks: tuple[tuple[int, ...], ...] = setting(((32, 32), (64, 64)), bounds=Range(1, MAX_LAYER_WIDTH),
                                                       entries=Range(1, MAX_CONV_BLOCKS))
    batch_norm: bool = setting(False)
    conv_dropout: float = setting(0.25, bounds=FRACTION)  # after each block's pooling; 0 disables
    dense_units: tuple[int, ...] = setting((512,), bounds=Range(1, MAX_LAYER_WIDTH), entries=Range(0, MAX_LAYERS))
    dense_dropout: float = setting(0.5, bounds=FRACTION)  # after each dense layer; 0 disables


def _block_sizes(settings: CnnConfig) -> list[str]:
    if all(1 <= len(block) <= MAX_LAYERS for block in settings.conv_blocks):
        return []
    return [f"each of cnn.conv_blocks must hold between 1 and {MAX_LAYERS} filter counts"]


KIND = ModelKind(
    name="cnn",
    settings=CnnConfig,
    build=lambda config, classes, shape: network_of("cnn").build_cnn(config.cnn, classes, shape),
    tally=lambda config, classes, shape: network_of("cnn").tally_cnn(config.cnn, classes, shape),
    label=lambda config: "CNN from scratch",
    check_image_size=lambda config, size: network_of("cnn").check_cnn_image_size(config.cnn, size),
    check_settings=_block_sizes,
)
