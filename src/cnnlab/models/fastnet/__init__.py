"""The fast net: a wide, shallow net built for fast CIFAR-10 training from scratch, after Keller Jordan's airbench.

This module declares the kind (its settings and `KIND`) without Keras; `network.py` builds it and folds its
training-only layers away for the saved model.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.common.settings import MAX_LAYER_WIDTH, UNIT_INTERVAL, Range, setting
from cnnlab.models.kind import ModelKind, network_of

ACTIVATIONS = ("gelu", "relu")


@dataclass(frozen=True)
class FastnetConfig:
    # filters of the three conv groups; 32 px images: the whitening patch trims a little, then each group halves them
    widths: tuple[int, ...] = setting((64, 256, 256), bounds=Range(1, MAX_LAYER_WIDTH), entries=Range(1, 4))
    whiten_patch: int = setting(2, bounds=Range(1, 4))  # size of the image patches the first layer whitens
    # weight of each new batch in BatchNorm's running averages
    batchnorm_momentum: float = setting(0.6, bounds=Range(0.0, 1.0, low_open=True))
    # BatchNorm shifts learn this many times faster than other weights
    bias_lr_scale: float = setting(64.0, bounds=Range(0.0, 10_000.0, low_open=True))
    # each step adds weight_decay * kernel to the conv and dense kernels' gradients
    weight_decay: float = setting(0.0, bounds=UNIT_INTERVAL)
    logit_scale: float = setting(1 / 9, bounds=Range(0.0, 100.0, low_open=True))
    # "relu" is much cheaper than "gelu" on CPUs without fast transcendental math
    activation: str = setting("gelu", choices=ACTIVATIONS)


KIND = ModelKind(
    name="fastnet",
    settings=FastnetConfig,
    build=lambda config, classes, shape: network_of("fastnet").build_fastnet(config.fastnet, classes, shape,
                                                                          seed=config.train.seed),
    tally=lambda config, classes, shape: network_of("fastnet").tally_fastnet(config.fastnet, classes, shape),
    label=lambda config: "fast net from scratch",
    check_image_size=lambda config, size: network_of("fastnet").check_fastnet_image_size(config.fastnet, size),
    prepare_with_data=lambda model, images: network_of("fastnet").fit_input_layers(model, images),
    portable_copy=lambda model: network_of("fastnet").portable_copy(model),
    custom_objects=lambda: {"cnnlab>ScaledBias": network_of("fastnet").ScaledBias},
)
