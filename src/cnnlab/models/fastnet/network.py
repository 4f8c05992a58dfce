"""A wide, shallow net built for fast CIFAR-10 training, after the ideas of Keller Jordan's airbench (2024).

The network: per-channel standardisation, a frozen 2x2 conv that whitens image patches, then three groups of
[conv 3x3 -> max pool 2 -> BatchNorm -> act -> conv 3x3 -> BatchNorm -> act], a final max pool, one bias-free
dense layer and a fixed 1/9 scale on the logits; "act" is GELU, or ReLU where speed matters more. What makes it
train in a few epochs:

- the whitening layer is computed from the training images (`fit_input_layers`), not learned;
- every conv starts as an identity on its first input channels ("dirac" initialisation), so signals pass through
  the fresh net unchanged;
- BatchNorm has no learned scale, and its learned shift moves `bias_lr_scale` times faster than the other weights.

Everything here is `keras` / `keras.ops`, so the net runs on any Keras backend.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from cnnlab.common.errors import CnnlabError
from cnnlab.models.convolution import same_conv
from cnnlab.models.fastnet import FastnetConfig
from cnnlab.models.footprint import Tally, poolings_allowed
from cnnlab.models.portable import keras_copy, keras_class

WHITEN_LAYER = "whiten"
SHIFT_SUFFIX = "_shift"  # a ScaledBias is named after the layer whose output it shifts
WHITENING_EPSILON = 5e-4  # added to the patch covariance's eigenvalues: keeps noise directions from blowing up
WHITENING_SAMPLE = 5000  # images whose patches estimate the covariance; more changes nothing measurable


@keras.saving.register_keras_serializable(package="cnnlab")
class ScaledBias(keras.layers.Layer):
    """Adds a learned per-channel shift stored divided by `scale`.

    A gradient step on the stored value moves the shift `scale**2` times as far as it would move a plain bias, so
    the shift learns faster than the rest of the net under any optimizer and learning rate schedule.
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def build(self, input_shape):
        self.stored = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="stored")

    def shift(self):
        """The shift this layer adds."""
        return self.stored * self.scale

    def call(self, inputs):
        return inputs + ops.cast(self.shift(), inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def build_fastnet(config: FastnetConfig, num_classes: int, image_shape: tuple[int, int, int], seed: int) -> keras.Model:
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))  # one per layer: the same net for the same seed
    channels = image_shape[-1]
    bias_scale = math.sqrt(config.bias_lr_scale)

    def activate(x, name):
        return keras.layers.Activation(config.activation, name=name)(x)

    def batch_norm(x, name):
        # PyTorch-style momentum 0.6 (weight of the new batch) is Keras momentum 0.4 (weight of the old average).
        x = keras.layers.BatchNormalization(
            momentum=1 - config.batchnorm_momentum, epsilon=1e-12, center=False, scale=False, name=name
        )(x)
        return ScaledBias(bias_scale, name=f"{name}{SHIFT_SUFFIX}")(x)

    def random_start():
        # Uniform in +-1/sqrt(fan_in): PyTorch's default, which the recipe was tuned with.
        return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=next(seeds))

    def conv(x, width, name):
        return same_conv(width, 3, use_bias=False, kernel_initializer=random_start(),
                         kernel_regularizer=_l2(config.weight_decay), name=name)(x)

    inputs = keras.Input(shape=image_shape, name="image")
    # Set from the training data by `fit_input_layers`, standardisation folded in: raw 0-255 images go in, as for
    # every cnnlab model.
    x = keras.layers.Conv2D(_whiten_width(config, channels), config.whiten_patch, padding="valid", trainable=False,
                            name=WHITEN_LAYER)(inputs)
    x = ScaledBias(1.0, name=f"{WHITEN_LAYER}{SHIFT_SUFFIX}")(x)
    x = activate(x, "whiten_act")
    for index, width in enumerate(config.widths, start=1):
        x = conv(x, width, f"group{index}_conv1")
        x = keras.layers.MaxPooling2D(2, name=f"group{index}_pool")(x)
        x = activate(batch_norm(x, f"group{index}_bn1"), f"group{index}_act1")
        x = conv(x, width, f"group{index}_conv2")
        x = activate(batch_norm(x, f"group{index}_bn2"), f"group{index}_act2")
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, kernel_initializer=random_start(),
                           kernel_regularizer=_l2(config.weight_decay), name="logits")(x)
    x = keras.layers.Rescaling(config.logit_scale, name="logit_scale")(x)
    # float32 output whatever the compute dtype, so probabilities and the loss stay numerically sound.
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="fastnet")
    _identity_start(model)
    return model


def check_fastnet_image_size(config: FastnetConfig, image_size: int) -> None:
    """Refuse more groups than the images can be halved, after the whitening conv trims `whiten_patch - 1` px."""
    allowed = poolings_allowed(image_size - config.whiten_patch + 1)
    if len(config.widths) > allowed:
        raise CnnlabError(f"config: fastnet.widths has {len(config.widths)} groups; {image_size} px images allow at "
                          f"most {allowed} with fastnet.whiten_patch {config.whiten_patch} (each group halves the image)")


def _whiten_width(config: FastnetConfig, channels: int) -> int:
    return 2 * channels * config.whiten_patch**2  # each whitening direction, and its negative


def _l2(weight_decay: float):
    # L2 in the loss is weight decay that goes through momentum, as in the SGD recipes this net comes from.
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _identity_start(model: keras.Model) -> None:
    """Make each 3x3 conv's first `in_channels` filters pass their input channel through unchanged."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name != WHITEN_LAYER:
            kernel = np.array(layer.kernel.numpy())
            height, width, inputs, outputs = kernel.shape
            kept = min(inputs, outputs)
            kernel[:, :, :, :kept] = 0.0
            kernel[height // 2, width // 2, np.arange(kept), np.arange(kept)] = 1.0
            layer.kernel.assign(kernel)


def fit_input_layers(model: keras.Model, images: np.ndarray) -> None:
    """Set the whitening conv from training images (uint8 or float, NHWC, 0-255).

    The filters are the eigenvectors of the covariance of standardised image patches, each divided by the square
    root of its eigenvalue, plus their negatives (so that the activation after them loses no information). Standardising
    each channel is folded into the same conv's kernel and bias.
    """
    images = np.asarray(images[:WHITENING_SAMPLE], dtype=np.float64)
    mean = images.mean(axis=(0, 1, 2))
    std = images.std(axis=(0, 1, 2)) + 1e-8
    standardized = (images - mean) / std
    whiten = model.get_layer(WHITEN_LAYER)
    size = whiten.kernel.shape[0]
    patches = np.lib.stride_tricks.sliding_window_view(standardized, (size, size), axis=(1, 2))
    # (n, rows, cols, channels, size, size) -> one row per patch, in the kernel's (height, width, channel) order
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size * size * images.shape[-1])
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + WHITENING_EPSILON)
    kernel = np.concatenate([filters, -filters], axis=1).reshape(size, size, images.shape[-1], -1)
    kernel_on_raw = kernel / std[:, None]
    bias = -np.einsum("hwck,c->k", kernel_on_raw, mean)
    whiten.set_weights([kernel_on_raw.astype("float32"), bias.astype("float32")])


def tally_fastnet(config: FastnetConfig, num_classes: int, image_shape: tuple[int, int, int]) -> Tally:
    """The model `build_fastnet` builds, counted layer by layer without building it."""
    tally = Tally(image_shape)
    tally.conv(_whiten_width(config, image_shape[-1]), kernel=config.whiten_patch, padding="valid")
    tally.channel_shift()
    tally.elementwise()  # activation
    for width in config.widths:
        tally.conv(width, bias=False)
        tally.pool()
        _tally_norm_and_activation(tally)
        tally.conv(width, bias=False)
        _tally_norm_and_activation(tally)
    tally.global_pool()
    tally.dense(num_classes, bias=False)
    tally.elementwise()  # logit scale
    tally.elementwise()  # softmax
    return tally


def _tally_norm_and_activation(tally: Tally) -> None:
    tally.batch_norm(scale_and_shift=False)
    tally.channel_shift()  # ScaledBias
    tally.elementwise()


def portable_copy(model: keras.Model) -> keras.Model:
    """`model` with every `ScaledBias` folded away, for model.keras.

    A `ScaledBias` only changes how fast a shift learns; once trained it is an addition, which the layer before it
    does instead (a BatchNormalization gains its centre, the whitening conv's bias takes the shift).
    """
    # convert_to_numpy, not np.asarray: on PyTorch a trainable weight's tensor refuses NumPy until detached
    shifts = {_folded_into(model, layer).name: keras.ops.convert_to_numpy(layer.shift())
              for layer in model.layers if isinstance(layer, ScaledBias)}

    def clone(layer):
        if isinstance(layer, ScaledBias):
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy.name)
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name in shifts:
            config["center"] = True
        return keras_class(layer).from_config(config)

    def weights_of(layer):
        return None if isinstance(layer, ScaledBias) else _with_shift(layer, shifts.get(layer.name))

    return keras_copy(model, clone, weights_of)


def _folded_into(model: keras.Model, shift: ScaledBias) -> keras.layers.Layer:
    """The layer whose output `shift` shifts (named after it), checked to be one that can add the shift itself."""
    target = model.get_layer(shift.name.removesuffix(SHIFT_SUFFIX))
    plain_batch_norm = isinstance(target, keras.layers.BatchNormalization) and not (target.center or target.scale)
    conv_with_bias = isinstance(target, keras.layers.Conv2D) and target.use_bias
    if not (plain_batch_norm or conv_with_bias):  # a programming error: a new net that this fold does not know
        raise ValueError(f"cannot fold {shift.name} into {target.name}, a {type(target).__name__}")
    return target


def _with_shift(layer: keras.layers.Layer, shift: np.ndarray | None) -> list[np.ndarray]:
    weights = layer.get_weights()
    if shift is None:
        return weights
    if isinstance(layer, keras.layers.BatchNormalization):  # weights with a centre: [beta, moving mean, variance]
        return [shift, *weights]
    kernel, bias = weights  # a conv with a bias
    return [kernel, bias + shift]
