"""VGG16 for transfer learning: ImageNet's convolutional base, a new dense head for CIFAR-10's classes.

The saved model takes raw 0-255 RGB images like the CNN does: upscaling (`image_size`) and VGG16's own
preprocessing (`keras.applications.vgg16.preprocess_input`: RGB to BGR, minus the ImageNet channel means) are layers
inside it. The preprocessing is a frozen 1x1 convolution, which computes exactly that affine map with a built-in
layer, so the model still loads with plain `keras.saving.load_model(..., safe_mode=True)` (a Lambda layer would not).
"""

from __future__ import annotations

import functools
from pathlib import Path

import keras
import numpy as np

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.config import RunConfig
from cnnlab.models.footprint import Tally
from cnnlab.models.kind import Phase
from cnnlab.models.vgg16 import BLOCK_WIDTHS, NUM_BLOCKS, Vgg16Config

BASE_NAME = "vgg16"
PREPROCESS_NAME = "vgg16_preprocess"
HEAD_PREFIX = "head_"
OUTPUT_NAME = "probabilities"
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, "caffe" mode


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
    if config.head_batch_norm:
        layers.append(keras.layers.BatchNormalization(name=f"{HEAD_PREFIX}norm"))
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
    if config.top_block < NUM_BLOCKS:  # the same layers and weights, up to the top block's pooling
        base = keras.Model(base.input, base.get_layer(f"block{config.top_block}_pool").output, name=BASE_NAME)
    x = base(x, training=False)  # inference mode in both phases, as fine-tuning practice recommends
    for layer in head_layers(config, num_classes, seed):
        x = layer(x)
    return keras.Model(inputs, x, name="vgg16_transfer")


def phases(config: RunConfig) -> list[Phase]:
    """Transfer learning as done in practice: phase 1 fits the new head with the base frozen; phase 2 unfreezes the
    base's last `unfreeze_blocks` conv blocks and trains on at its own (usually much lower) learning rate.

    With `feature_cache`, the blocks a phase keeps frozen run once per image (and once per mirror image where
    `data.flip`), not once per epoch: phase 1 trains the head on the whole base's cached output, phase 2 the unfrozen
    blocks and the head on the cached output of the blocks below them. That is exactly what the full model computes
    there (see `split_before_block`), so the result is the same, only sooner: one pass over the images per phase,
    where running the model would cost one per epoch.
    """
    settings = config.vgg16
    # Cached features serve flips (from the mirror images' features) but not shifts: with data.translate every
    # epoch needs the images themselves, so the phases run the whole model, with the same result, only slower.
    cacheable = settings.feature_cache and not config.data.translate
    head_epochs = settings.head_epochs or config.train.epochs
    head = Phase("head", head_epochs, config.train.learning_rate, prepare=freeze_base,
                 cached_features=_cut_before(settings.top_block + 1) if cacheable else None)
    if not (settings.unfreeze_blocks and settings.finetune_epochs):
        return [head]
    first_trained_block = settings.top_block + 1 - settings.unfreeze_blocks
    # Cut before block 1 there would be nothing to compute once: the phase runs the whole model on the images.
    finetune = Phase("finetune", settings.finetune_epochs, settings.finetune_learning_rate,
                     prepare=functools.partial(freeze_base, unfrozen_blocks=settings.unfreeze_blocks),
                     cached_features=_cut_before(first_trained_block) if cacheable and first_trained_block > 1 else None)
    return [head, finetune]


def _cut_before(block: int):
    return functools.partial(split_before_block, first_block=block)


def base_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BASE_NAME)


def freeze_base(model: keras.Model, unfrozen_blocks: int = 0) -> None:
    """Freeze VGG16's base except its last `unfrozen_blocks` conv blocks (the top block first)."""
    base = base_of(model)
    top_block = max(_block_of(layer) for layer in base.layers)
    base.trainable = unfrozen_blocks > 0
    for layer in base.layers:
        layer.trainable = _block_of(layer) > top_block - unfrozen_blocks


def _block_of(layer: keras.layers.Layer) -> int:
    """The conv block (1-5) a layer of keras.applications.VGG16 belongs to: its name says, "block3_conv2"; 0 for
    the input layer."""
    return int(layer.name[len("block")]) if layer.name.startswith("block") else 0


def split_before_block(model: keras.Model, first_block: int) -> tuple[keras.Model, keras.Model]:
    """`model` cut in two before conv block `first_block` (top_block + 1: after the whole base), sharing its layers
    and weights.

    The first part takes raw images through the upscaling, the preprocessing and VGG16's blocks below `first_block`:
    the features a run computes once. The second takes those features through the remaining blocks and the head:
    what a cached-features phase trains. Chained, they compute exactly what `model` does (its base runs in inference
    mode in every phase, and VGG16 has no layer that behaves otherwise in training).
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    for layer in model.layers[1:]:  # graph order: [upscale], preprocess, base, head...
        if layer.name == BASE_NAME:
            break
        x = layer(x)
    base_layers = base_of(model).layers[1:]  # a plain chain: block1_conv1 ... the top block's pooling
    for layer in base_layers:
        if _block_of(layer) < first_block:
            x = layer(x)
    extractor = keras.Model(inputs, x, name=f"vgg16_below_block{first_block}")
    features = keras.Input(shape=x.shape[1:], name="features")
    y = features
    for layer in base_layers:
        if _block_of(layer) >= first_block:
            y = layer(y)
    for layer in model.layers:
        if layer.name.startswith(HEAD_PREFIX) or layer.name == OUTPUT_NAME:
            y = layer(y)
    return extractor, keras.Model(features, y, name=f"vgg16_from_block{first_block}")


def tally_vgg16(config: Vgg16Config, num_classes: int, image_shape: tuple[int, int, int]) -> Tally:
    """The model `build_vgg16` builds, counted layer by layer without building it (or loading any weights)."""
    tally = Tally(image_shape)
    if image_shape[:2] != (config.image_size, config.image_size):
        tally.resize(config.image_size)
    tally.conv(3, kernel=1)  # caffe_preprocessing
    for widths in BLOCK_WIDTHS[: config.top_block]:
        for width in widths:
            tally.conv(width)  # with its ReLU inside
        tally.pool()
    if config.head_pooling == "flatten":
        tally.flatten()
    else:
        tally.global_pool()
    if config.head_batch_norm:
        tally.batch_norm()
    tally.classifier_head(config.head_units, bool(config.head_dropout), num_classes)
    return tally
