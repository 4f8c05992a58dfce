"""The 'same' 3x3 (any odd size) stride-1 convolutions of cnnlab's own networks, and a faster way to train them on
some machines: their gradients computed by forward convolutions.

For such a convolution y = conv(x, k), both gradients are themselves convolutions:
- dx = conv(dy, k flipped in space, input and output channels swapped), again 'same' and stride 1;
- dk = conv(x padded, seen as `in_channels` images whose channels are the batch, with dy seen as a filter of the
  image's size whose input channels are the batch), 'valid'.
Backends have dedicated kernels for both gradients; on a 2-core AVX2 EPYC in float32, TensorFlow's oneDNN kernels
for them ran at 43-83 GFLOP/s where its forward convolution ran at 96-107, and training was faster with the
forward-convolution gradients (benchmarks/RESULTS.md, "Convolution gradients by forward convolutions"). The same
numbers come out, up to float rounding.

The backend's engine says where to use them (`Engine.convolution_gradients`), and `ModelFactory` switches them on
while it builds a run's models, as it sets Keras's dtype policy for them: cnnlab's own networks then get them from
`same_conv`, and a backbone Keras builds, where measured faster (VGG16), from `with_convolution_gradients`.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

_by_convolution = False  # set by `gradients_by_convolution` while a run's models are built


@contextlib.contextmanager
def gradients_by_convolution(enabled: bool):
    """While open, `same_conv` makes layers whose gradients are forward convolutions (if `enabled`)."""
    global _by_convolution
    previous, _by_convolution = _by_convolution, enabled
    try:
        yield
    finally:
        _by_convolution = previous


def same_conv(filters: int, kernel_size: int, **kwargs) -> keras.layers.Conv2D:
    """A stride-1 'same' Conv2D with an odd `kernel_size`: Keras's own, or, inside `gradients_by_convolution(True)`,
    one that computes its gradients by forward convolutions (the same layer for inference and in model.keras)."""
    layer = Conv2D if _by_convolution else keras.layers.Conv2D
    return layer(filters, kernel_size, padding="same", **kwargs)


def with_convolution_gradients(model: keras.Model) -> keras.Model:
    """A network Keras built (a `keras.applications` backbone measured faster with them: VGG16): inside
    `gradients_by_convolution(True)`, a copy with the same weights whose 3x3 'same' stride-1 Conv2D layers compute
    their gradients by forward convolutions (the size measured: benchmarks/RESULTS.md); elsewhere `model` itself."""
    if not _by_convolution:
        return model

    def clone(layer):
        swapped = type(layer) is keras.layers.Conv2D and layer.kernel_size == (3, 3) and _same_and_plain(layer)
        return (Conv2D if swapped else type(layer)).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _same_and_plain(layer: keras.layers.Conv2D) -> bool:
    odd = all(size % 2 == 1 for size in layer.kernel_size)
    plain = layer.strides == (1, 1) and layer.dilation_rate == (1, 1) and layer.groups == 1
    return odd and plain and layer.padding == "same" and layer.data_format == "channels_last"


@keras.saving.register_keras_serializable(package="cnnlab")
class Conv2D(keras.layers.Conv2D):
    """Keras's Conv2D ('same', stride 1, odd kernel, channels last) whose backward pass is two forward convolutions.

    Named as Keras's own on purpose: Keras files a layer's weights under its class name, so weights saved from one
    load into the other, as a run resumed where "auto" chooses otherwise needs; saved models tell them apart by
    their registered names ("cnnlab>Conv2D")."""

    portable_class = keras.layers.Conv2D  # what model.keras holds instead (models/portable.py): the same inference

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if not _same_and_plain(self):
            raise ValueError(f"{self.name}: gradients by convolution need an odd kernel, stride 1, no dilation or "
                             "groups, 'same' padding and channels last")

    def call(self, inputs, training=None):
        # Outside training, Keras's own path: there is no gradient to speed up, and `cnnlab bench` measured evaluation
        # through the custom gradient at 0.60-0.76x plain Keras's on the AVX2 EPYC (1.02-1.05x without it).
        if not training:
            return super().call(inputs)
        # A copy of the kernel, not the variable itself: TensorFlow's custom_gradient refuses a function that reads a
        # variable unless its gradient function returns the variables' gradients separately.
        outputs = convolution_with_convolution_gradients(inputs, ops.copy(self.kernel))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)  # channels last: the bias broadcasts over the last axis
        return outputs if self.activation is None else self.activation(outputs)


@ops.custom_gradient
def convolution_with_convolution_gradients(images, kernel):
    """conv(images, kernel), 'same' and stride 1, whose gradients are the forward convolutions of the module doc."""

    def gradients(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return input_gradient(upstream, kernel), kernel_gradient(images, upstream, kernel.shape[:2])

    return ops.conv(images, kernel, padding="same"), gradients


def input_gradient(upstream, kernel):
    """d loss / d images: the upstream gradient convolved with the kernel flipped in space, channels swapped."""
    flipped = ops.transpose(ops.flip(ops.flip(kernel, axis=0), axis=1), (0, 1, 3, 2))
    return ops.conv(upstream, flipped, padding="same")


def kernel_gradient(images, upstream, kernel_size):
    """d loss / d kernel: each input channel of the padded images as an image whose channels are the batch,
    convolved ('valid') with the upstream gradient as a filter of the image's size over the same batch channels."""
    rows, columns = (size // 2 for size in kernel_size)
    padded = ops.pad(images, ((0, 0), (rows, rows), (columns, columns), (0, 0)))
    by_channel = ops.transpose(padded, (3, 1, 2, 0))  # (in channels, height, width, batch)
    as_filter = ops.transpose(upstream, (1, 2, 0, 3))  # (height, width, batch, out channels)
    return ops.transpose(ops.conv(by_channel, as_filter, padding="valid"), (1, 2, 0, 3))
