"""VGG16 for transfer learning: ImageNet's convolutional base, a new dense head for CIFAR-10's classes.

The saved model takes raw 0-255 RGB images like the CNN does: upscaling (`image_size`) and VGG16's own
preprocessing (`keras.applications.vgg16.preprocess_input`: RGB to BGR, minus the ImageNet channel means) are layers
inside it. The preprocessing is a frozen 1x1 convolution, which computes exactly that affine map with a built-in
layer, so the model still loads with plain `keras.saving.load_model(..., safe_mode=True)` (a Lambda layer would not).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from cnnlab.config import RunConfig, Vgg16Config
from cnnlab.errors import CnnlabError, first_line
from cnnlab.models.footprint import Tally
from cnnlab.models.registry import Phase

BASE_NAME = "vgg16"
PREPROCESS_NAME = "vgg16_preprocess"
HEAD_PREFIX = "head_"
OUTPUT_NAME = "probabilities"
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, "caffe" mode
# The filters of each conv in each of VGG16's blocks, as keras.applications.VGG16 builds them.
BLOCK_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
NUM_BLOCKS = len(BLOCK_WIDTHS)


def vgg16_label(config: Vgg16Config) -> str:
    """How tables and figures name a VGG16 run: a random start is never called fine-tuned, nor a frozen base."""
    if config.weights == "none":
        return "VGG16 from scratch"
    source = "ImageNet" if config.weights == "imagenet" else Path(config.weights).name
    if config.unfreeze_blocks and config.finetune_epochs:
        return f"VGG16 fine-tuned ({source})"
    return f"VGG16 on frozen {source} features"


def resolve_weights(weights: str) -> str | None:
    """`weights` as keras.applications.VGG16 takes it, after checking a local file is a plausible HDF5 file."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.exists():
        if path.suffix or "/" in weights:
            raise CnnlabError(f"weights file not found: {weights}")
        raise CnnlabError(f"unknown --weights value '{weights}': use imagenet, none, or the path to a .h5 file")
    import h5py

    if not path.is_file() or not h5py.is_hdf5(path):
        raise CnnlabError(f"{weights} is not an HDF5 weights file")
    if not path.name.endswith((".h5", ".hdf5")):
        raise CnnlabError(f"{weights}: a weights file must end in .h5 (or .weights.h5), as Keras reads it by name")
    return str(path)


def build_vgg16_base(config: Vgg16Config) -> keras.Model:
    weights = resolve_weights(config.weights)
    size = config.image_size
    try:
        return keras.applications.VGG16(include_top=False, weights=weights, input_shape=(size, size, 3))
    except Exception as exc:  # Keras raises bare Exceptions for downloads and ValueError for mismatched files
        if weights is None:
            raise
        if weights == "imagenet":
            raise CnnlabError(_download_hint(exc)) from None
        raise CnnlabError(f"{config.weights} does not hold VGG16 no-top weights: {first_line(exc)}") from None


def _download_hint(exc: BaseException) -> str:
    return (
        f"could not get the ImageNet VGG16 weights ({first_line(exc)}); offline, pass --weights PATH to a copy of "
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, or --weights none to train VGG16 from scratch"
    )


def caffe_preprocessing(name: str = PREPROCESS_NAME) -> keras.layers.Layer:
    """A frozen 1x1 convolution equal to vgg16.preprocess_input on 0-255 RGB: swap to BGR, subtract the means."""
    layer = keras.layers.Conv2D(3, 1, name=name, trainable=False)
    layer.build((None, None, None, 3))
    swap_to_bgr = np.zeros((1, 1, 3, 3), dtype="float32")
    for source, target in ((0, 2), (1, 1), (2, 0)):
        swap_to_bgr[0, 0, source, target] = 1.0
    layer.set_weights([swap_to_bgr, -np.array(IMAGENET_BGR_MEAN, dtype="float32")])
    return layer


def head_layers(config: Vgg16Config, num_classes: int, seed: int) -> list[keras.layers.Layer]:
    """The new top. Seeded per layer, so the same head comes out whether or not phase 1 uses cached features."""
    layers: list[keras.layers.Layer] = [
        keras.layers.Flatten(name=f"{HEAD_PREFIX}flatten")
        if config.head_pooling == "flatten"
        else keras.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")
    ]
    for index, units in enumerate(config.head_units, start=1):
        initializer = keras.initializers.HeUniform(seed=seed + index)
        name = f"{HEAD_PREFIX}dense{index}"
        layers.append(keras.layers.Dense(units, "relu", kernel_initializer=initializer, name=name))
        if config.head_dropout:
            dropout_seed = seed + 100 + index
            layers.append(keras.layers.Dropout(config.head_dropout, seed=dropout_seed, name=f"{HEAD_PREFIX}dropout{index}"))
    layers.append(
        keras.layers.Dense(
            num_classes, "softmax", dtype="float32", kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name=OUTPUT_NAME,
        )
    )
    return layers


def build_vgg16(config: Vgg16Config, num_classes: int, image_shape: tuple[int, int, int], seed: int) -> keras.Model:
    inputs = keras.Input(shape=image_shape, name="image")
    x = inputs
    if image_shape[:2] != (config.image_size, config.image_size):
        x = keras.layers.Resizing(config.image_size, config.image_size, name="upscale")(x)
    x = caffe_preprocessing()(x)
    base = build_vgg16_base(config)
    x = base(x, training=False)  # inference mode in both phases, as fine-tuning practice recommends
    for layer in head_layers(config, num_classes, seed):
        x = layer(x)
    return keras.Model(inputs, x, name="vgg16_transfer")


def phases(config: RunConfig) -> list[Phase]:
    """Transfer learning as done in practice: phase 1 fits the new head with the base frozen (on base features computed
    once per image if `feature_cache`, which gives the same head far faster); phase 2 unfreezes the base's last
    `unfreeze_blocks` conv blocks and trains on at a much lower learning rate."""
    settings = config.vgg16
    head = Phase("head", config.train.epochs, config.train.learning_rate, prepare=freeze_base,
                 cached_features=split_at_base if settings.feature_cache else None)
    if not (settings.unfreeze_blocks and settings.finetune_epochs):
        return [head]
    finetune = Phase("finetune", settings.finetune_epochs, settings.finetune_learning_rate,
                     prepare=lambda model: freeze_base(model, settings.unfreeze_blocks))
    return [head, finetune]


def base_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE_NAME)


def freeze_base(model: keras.Model, unfrozen_blocks: int = 0) -> None:
    """Freeze VGG16's base except its last `unfrozen_blocks` conv blocks (block5 first)."""
    base = base_of(model)
    trainable = tuple(f"block{block}_" for block in range(NUM_BLOCKS - unfrozen_blocks + 1, NUM_BLOCKS + 1))
    base.trainable = unfrozen_blocks > 0
    for layer in base.layers:
        layer.trainable = bool(trainable) and layer.name.startswith(trainable)


def feature_extractor(model: keras.Model) -> keras.Model:
    """Raw images in, VGG16 base features out (the same layers as `model`): what phase 1 caches."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    for layer in model.layers[1:]:  # layers in graph order: [upscale], preprocess, base, head...
        if layer.name == BASE_NAME:
            return keras.Model(inputs, layer(x, training=False), name="vgg16_features")
        x = layer(x)
    raise ValueError("model has no VGG16 base")


def head_model(model: keras.Model) -> keras.Model:
    """The head alone, on base features, sharing its layers (and so its weights) with `model`."""
    base = base_of(model)
    features = keras.Input(shape=base.output.shape[1:], name="features")
    x = features
    for layer in model.layers:
        if layer.name.startswith(HEAD_PREFIX) or layer.name == OUTPUT_NAME:
            x = layer(x)
    return keras.Model(features, x, name="vgg16_head")


def split_at_base(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The feature extractor and the head of `model`, sharing its layers: what a cached-features phase trains."""
    return feature_extractor(model), head_model(model)


def tally_vgg16(config: Vgg16Config, num_classes: int, image_shape: tuple[int, int, int]) -> Tally:
    """The model `build_vgg16` builds, counted layer by layer without building it (or loading any weights)."""
    tally = Tally(image_shape)
    if image_shape[:2] != (config.image_size, config.image_size):
        tally.resize(config.image_size)
    tally.conv(3, kernel=1)  # caffe_preprocessing
    for widths in BLOCK_WIDTHS:
        for width in widths:
            tally.conv(width)  # with its ReLU inside
        tally.pool()
    if config.head_pooling == "flatten":
        tally.flatten()
    else:
        tally.global_pool()
    tally.classifier_head(config.head_units, bool(config.head_dropout), num_classes)
    return tally
