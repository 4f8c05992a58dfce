"""The FLOPs a model spends, counted from the built model: 2 x the multiply-adds of its convolutions and dense layers.

Elementwise work (activations, batch norm, pooling, additions) is left out, as the published counts this project
compares with leave it out (airbench's 0.36 PFLOP for 94% on CIFAR-10): it is a few percent of a CNN's work.
A training step costs the forward pass, plus for each layer the gradient of its weights (as much as its forward pass,
where the layer trains) and the gradient of its input (as much again, where a layer before it trains): the usual
"3 x forward" when every layer trains, less where a frozen trunk sits below the trained layers.
"""

from __future__ import annotations

import math

import keras

# Layers whose work is multiply-adds of their kernels over the output's positions. A separable convolution's
# depthwise part runs at its input's positions, the same as its output's at stride 1 (the only stride used here).
_KERNEL_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D,
                  keras.layers.SeparableConv2D, keras.layers.Dense, keras.layers.EinsumDense)


def forward_flops(model: keras.Model) -> int:
    """FLOPs of one image through `model`, forward."""
    return sum(flops for flops, _ in _layer_flops(model))


def training_step_flops(model: keras.Model) -> int:
    """FLOPs of one image through a training step of `model` as its layers' `trainable` flags stand: the forward
    pass, the trained layers' weight gradients, and the input gradients above the lowest trained layer."""
    total, trained_below = 0, False
    for flops, trains in _layer_flops(model):
        total += flops * (1 + trains + trained_below)
        trained_below = trained_below or trains
    return total


def _layer_flops(model: keras.Model) -> list[tuple[int, bool]]:
    """(forward FLOPs per image, whether it trains) of each kernel layer, inputs first, nested models unfolded."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _layer_flops(layer)
        elif isinstance(layer, _KERNEL_LAYERS):
            kernels = sum(math.prod(weight.shape) for weight in layer.weights if len(weight.shape) >= 2)
            found.append((2 * _positions(layer) * kernels, bool(layer.trainable_weights)))
    return found


def _positions(layer) -> int:
    """The output positions at which a layer applies its kernels: the pixels of a convolution's output, 1 for a
    dense layer on a flat vector."""
    shape = layer.output.shape
    spatial = shape[2:] if getattr(layer, "data_format", "channels_last") == "channels_first" else shape[1:-1]
    return math.prod(spatial)
