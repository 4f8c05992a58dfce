"""Saving and loading a run's models so that any process can use them.

`model.keras` is written by `portable_copy`: the trained function built from Keras's own layers only, without the
optimizer. It loads with plain `keras.saving.load_model` in a process that has imported nothing of cnnlab (training
needs custom pieces, such as the fast net's `ScaledBias`, the `WarmupLinear` schedule and convolutions whose
gradients are forward convolutions, but using the model does not). `load_model` reads a run's models safely: sizes
are checked before Keras unpacks anything, `safe_mode` refuses code, and cnnlab's custom objects are known, so files
written before the portable format still load.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import keras

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.models import convolution, recipe
from cnnlab.models.kind import ModelKind
from cnnlab.models.portable import keras_copy
from cnnlab.models.registry import KINDS

# VGG16 at 224 px with a wide head is about 0.6 GB of float32 weights; anything much larger is not a cnnlab model.
MAX_MODEL_BYTES = 2 * 2**30
MAX_COMPRESSION_RATIO = 100  # Keras stores members uncompressed; a member that inflates far more is a zip bomb


def portable_copy(model: keras.Model, kind: ModelKind) -> keras.Model:
    """The same function as `model` from Keras's own layers, with its trained weights and no optimizer: a kind with
    training-only layers folds them away (its `portable_copy`)."""
    return (kind.portable_copy or keras_copy)(model)


def float32_copy(model: keras.Model, onnx_safe: bool = False) -> keras.Model:
    """The same function as `model` computed in float32 throughout, with its weights: the portable form to export.

    A mixed-precision model (bfloat16 or float16 compute) keeps its weights in float32 already, so only each layer's
    dtype policy changes; nested models (a backbone's trunk) are copied layer by layer too. `onnx_safe` also rewrites each
    activation that tf2onnx cannot convert as an equal function of operations it can (`ONNX_SAFE_ACTIVATIONS`).
    """
    swaps = ONNX_SAFE_ACTIVATIONS if onnx_safe else {}

    def as_float32(layer):
        if not isinstance(layer, keras.layers.Layer):  # an operation between layers (ConvNeXt's `x + y`): no dtype
            return layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Activation) and layer.activation in swaps:
            return keras.layers.Activation(swaps[layer.activation], name=layer.name, dtype="float32")
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=as_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def gelu_through_erf(x):
    """The exact GELU, x * Phi(x), through erf: TensorFlow computes Keras's through erfc, which tf2onnx cannot convert
    (ONNX has no Erfc), and the fast net uses it. LiteRT fuses Keras's GELU into its own operation, and a SavedModel
    runs TensorFlow's: only ONNX needs this."""
    return 0.5 * x * (1.0 + keras.ops.erf(x / math.sqrt(2.0)))


# An Activation layer's function -> an equal one that tf2onnx converts.
ONNX_SAFE_ACTIVATIONS = {keras.activations.gelu: gelu_through_erf}


def compute_dtypes(model: keras.Model) -> set[str]:
    """The dtypes `model`'s layers compute in, nested models' layers included."""
    dtypes = set()
    for layer in model.layers:
        dtypes.add(layer.dtype_policy.compute_dtype)
        if isinstance(layer, keras.Model):
            dtypes |= compute_dtypes(layer)
    return dtypes


def custom_objects() -> dict[str, type]:
    """What keras.saving needs to load any model cnnlab saved: its schedule, its convolutions and every kind's custom
    layers."""
    return {"cnnlab>WarmupLinear": recipe.WarmupLinear,
            "cnnlab>Conv2D": convolution.Conv2D,
            **{name: cls for kind in KINDS.values() for name, cls in kind.custom_objects().items()}}


def load_model(path: Path) -> keras.Model:
    """A run's saved model, refused with one line if it is damaged, too large, or carries code."""
    path = Path(path)
    _check_sizes(path)
    try:
        return keras.saving.load_model(path, custom_objects=custom_objects(), safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors and more for a damaged file
        raise CnnlabError(f"cannot load {path}: {first_line(exc)}") from None


def _check_sizes(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, ValueError, NotImplementedError, zipfile.BadZipFile) as exc:  # ValueError: a bad member name
        raise CnnlabError(f"cannot load {path}: not a Keras model file ({first_line(exc)})") from None
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_MODEL_BYTES:
        raise CnnlabError(f"cannot load {path}: it unpacks to {unpacked:,} bytes, over the {MAX_MODEL_BYTES:,} limit")
    for member in members:
        if member.filename.startswith(("/", "\\")) or ".." in member.filename.replace("\\", "/").split("/"):
            # Keras extracts nothing outside its folder, but warns four times: one line of ours instead
            raise CnnlabError(f"cannot load {path}: member {member.filename[:80]!r} points outside the archive; "
                              "not a Keras model file")
        if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1024):
            raise CnnlabError(f"cannot load {path}: member {member.filename!r} inflates {member.compress_size:,} "
                              f"bytes to {member.file_size:,}; not a Keras model file")
