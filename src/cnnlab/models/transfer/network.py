"""The transfer recipe's Keras side, for every backbone: the model (upscaling, the backbone's preprocessing, the
trunk cut after `top_block`, a new head), its two phases, and the cut that lets a phase train on cached features.

The saved model takes raw 0-255 RGB images like the CNN does. The preprocessing is a frozen 1x1 convolution, which
computes each backbone's affine normalisation exactly with a built-in layer, so the model still loads with plain
`keras.saving.load_model(..., safe_mode=True)` (a Lambda layer would not).
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace
from pathlib import Path

import keras
import numpy as np

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.config import RunConfig
from cnnlab.models.convolution import with_convolution_gradients
from cnnlab.models.footprint import Tally
from cnnlab.models.kind import Phase, network_of
from cnnlab.models.transfer import Backbone, Preprocessing

TRUNK_NAME = "trunk"
PREPROCESS_NAME = "preprocess"
HEAD_PREFIX = "head_"
OUTPUT_NAME = "probabilities"
REFERENCE_SIZE = 224  # the size the blocks are found at: every backbone's ImageNet size, where no map shrinks to 1
# The settings `build_trunk` reads, for a trunk built to be measured: random weights, nothing loaded
NO_WEIGHTS = SimpleNamespace(weights="none", image_size=REFERENCE_SIZE)


def resolve_weights(weights: str) -> str | None:
    """`weights` as a Keras constructor takes it, after checking a local file is a plausible HDF5 file."""
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


def build_trunk(backbone: Backbone, settings, image_size: int | None = None) -> keras.Model:
    """The backbone without its classifier, taking preprocessed images of `image_size` (default: the settings'),
    with the weights the settings name."""
    weights = resolve_weights(settings.weights)
    size = image_size or settings.image_size
    try:
        if backbone.application is None:  # one of cnnlab's own networks, in the backbone's package
            trunk = network_of(backbone.name).build_trunk(weights, size)
        else:
            constructor = getattr(keras.applications, backbone.application)
            trunk = constructor(include_top=False, weights=weights, input_shape=(size, size, 3))
            if backbone.gradients_by_convolution:
                trunk = with_convolution_gradients(trunk)
    except CnnlabError:
        raise
    except Exception as exc:  # Keras raises bare Exceptions for downloads and ValueError for mismatched files
        if weights is None:
            raise
        if weights == "imagenet":
            raise CnnlabError(_download_hint(backbone, exc)) from None
        raise CnnlabError(f"{settings.weights} does not hold {backbone.title} no-top weights: "
                          f"{first_line(exc)}") from None
    for layer in trunk.layers:  # the trunk runs in inference mode in every phase (see `freeze_trunk`)
        if isinstance(layer, keras.layers.Dropout):  # EfficientNetV2's stochastic depth
            layer.rate = 0.0
    trunk.name = TRUNK_NAME
    return trunk


def _download_hint(backbone: Backbone, exc: BaseException) -> str:
    return (f"could not get the ImageNet {backbone.title} weights ({first_line(exc)}); offline, pass --weights PATH "
            f"to a copy of {backbone.offline_file or 'them'}, or --weights none to train {backbone.title} from scratch")


def affine_preprocessing(preprocessing: Preprocessing, name: str = PREPROCESS_NAME) -> keras.layers.Layer:
    """A frozen 1x1 convolution equal to `preprocessing` on 0-255 RGB images."""
    layer = keras.layers.Conv2D(3, 1, name=name, trainable=False)
    layer.build((None, None, None, 3))
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for target in range(3):
        source = 2 - target if preprocessing.bgr else target
        kernel[0, 0, source, target] = preprocessing.scale[target]
    layer.set_weights([kernel, np.array(preprocessing.offset, dtype="float32")])
    return layer


def head_layers(settings, num_classes: int, seed: int) -> list[keras.layers.Layer]:
    """The new top. Seeded per layer, so the same head comes out whether or not phase 1 uses cached features."""
    layers: list[keras.layers.Layer] = [
        keras.layers.Flatten(name=f"{HEAD_PREFIX}flatten")
        if settings.head_pooling == "flatten"
        else keras.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")
    ]
    if settings.head_batch_norm:
        layers.append(keras.layers.BatchNormalization(name=f"{HEAD_PREFIX}norm"))
    for index, units in enumerate(settings.head_units, start=1):
        initializer = keras.initializers.HeUniform(seed=seed + index)
        layers.append(keras.layers.Dense(units, "relu", kernel_initializer=initializer, name=f"{HEAD_PREFIX}dense{index}"))
        if settings.head_dropout:
            layers.append(keras.layers.Dropout(settings.head_dropout, seed=seed + 100 + index,
                                               name=f"{HEAD_PREFIX}dropout{index}"))
    if settings.head_dropout and not settings.head_units:  # a linear head: dropout on the pooled features
        layers.append(keras.layers.Dropout(settings.head_dropout, seed=seed + 100, name=f"{HEAD_PREFIX}dropout"))
    layers.append(
        keras.layers.Dense(
            num_classes, "softmax", dtype="float32", kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name=OUTPUT_NAME,
        )
    )
    return layers


def block_ends(backbone: Backbone, trunk: keras.Model) -> list[int]:
    """The index in `trunk.operations` of the operation that ends each of the backbone's blocks."""
    if backbone.block_ends is not None:  # those the trunk has: it may be cut after a lower block
        names = [operation.name for operation in trunk.operations]
        return [names.index(name) for name in backbone.block_ends if name in names]
    # The same indices in every build, whole or cut: each block's end is preceded by its ancestors alone
    return [end for end in _found_block_ends(backbone) if end < len(trunk.operations)]


@functools.lru_cache(maxsize=None)
def _found_block_ends(backbone: Backbone) -> tuple[int, ...]:
    """The blocks of a trunk, found from its structure at the reference size: for each resolution (a halving of
    the input), the last operation that every later one depends on alone; a stretch without weights (padding, a
    rescaling) joins the next block. Operation order does not depend on the input size, so the indices hold at any."""
    trunk = build_trunk(backbone, NO_WEIGHTS, REFERENCE_SIZE)
    operations = trunk.operations
    cuts = set(_single_tensor_cuts(operations))
    ends: dict[int, int] = {}  # resolution level -> the last cut there
    for index, operation in enumerate(operations):
        if index in cuts:
            size = operation.output.shape[1]
            ends[round(math.log2(REFERENCE_SIZE / size))] = index
    blocks, start = [], 0
    for end in sorted(ends.values()):
        if any(getattr(operation, "weights", None) for operation in operations[start:end + 1]):
            blocks.append(end)
            start = end + 1
    blocks[-1] = len(operations) - 1  # the trunk's end ends its last block, whatever follows the last cut
    return tuple(blocks)


def _single_tensor_cuts(operations: list) -> list[int]:
    """The positions after which a single tensor, the output of the operation there, is all that later operations
    read: where a model can be cut in two."""
    last_read = {}
    for index, operation in enumerate(operations):
        for node in operation._inbound_nodes:
            for tensor in node.input_tensors:
                last_read[id(tensor._keras_history.operation)] = index
    cuts, live = [], set()
    for index, operation in enumerate(operations):
        live = {key for key in live | {id(operation)} if last_read.get(key, -1) > index}
        if live <= {id(operation)}:
            cuts.append(index)
    return cuts


def build_transfer(backbone: Backbone, settings, num_classes: int, image_shape: tuple[int, int, int],
                   seed: int) -> keras.Model:
    inputs = keras.Input(shape=image_shape, name="image")
    x = inputs
    if image_shape[:2] != (settings.image_size, settings.image_size):
        x = keras.layers.Resizing(settings.image_size, settings.image_size, name="upscale")(x)
    if backbone.preprocessing is not None:
        x = affine_preprocessing(backbone.preprocessing)(x)
    trunk = build_trunk(backbone, settings)
    ends = block_ends(backbone, trunk)
    if settings.top_block < backbone.blocks:  # the same layers and weights, up to the top block's end
        trunk = keras.Model(trunk.input, trunk.operations[ends[settings.top_block - 1]].output, name=TRUNK_NAME)
    # Inference mode in both phases, as practice recommends: frozen batch norms, no dropout (`freeze_trunk`,
    # `build_trunk`; Keras hands fit's training=True on to nested models whatever this call says)
    x = trunk(x, training=False)
    for layer in head_layers(settings, num_classes, seed):
        x = layer(x)
    return keras.Model(inputs, x, name=f"{backbone.name}_transfer")


def phases(backbone: Backbone, settings, config: RunConfig) -> list[Phase]:
    """Transfer learning as done in practice: phase 1 fits the new head with the trunk frozen; phase 2 unfreezes the
    trunk's last `unfreeze_blocks` blocks and trains on at its own (usually much lower) learning rate.

    With `feature_cache`, the blocks a phase keeps frozen run once per image (and once per mirror image where
    `data.flip`), not once per epoch: phase 1 trains the head on the whole trunk's cached output, phase 2 the
    unfrozen blocks and the head on the cached output of the blocks below them. That is exactly what the full model
    computes there (see `split_before_block`), so the result is the same, only sooner.
    """
    # Cached features serve flips (from the mirror images' features) but not shifts: with data.translate every
    # epoch needs the images themselves, so the phases run the whole model, with the same result, only slower.
    cacheable = settings.feature_cache and not config.data.translate
    head = Phase("head", settings.head_epochs or config.train.epochs, config.train.learning_rate,
                 prepare=functools.partial(freeze_trunk, backbone),
                 cached_features=_cut_before(backbone, settings.top_block + 1) if cacheable else None)
    if not (settings.unfreeze_blocks and settings.finetune_epochs):
        return [head]
    first_trained_block = settings.top_block + 1 - settings.unfreeze_blocks
    # Cut before block 1 there would be nothing to compute once: the phase runs the whole model on the images.
    finetune = Phase("finetune", settings.finetune_epochs, settings.finetune_learning_rate,
                     prepare=functools.partial(freeze_trunk, backbone, unfrozen_blocks=settings.unfreeze_blocks),
                     cached_features=(_cut_before(backbone, first_trained_block)
                                      if cacheable and first_trained_block > 1 else None))
    return [head, finetune]


def _cut_before(backbone: Backbone, block: int):
    return functools.partial(split_before_block, backbone, first_block=block)


def trunk_of(model: keras.Model) -> keras.Model:
    return model.get_layer(TRUNK_NAME)


def _first_operation_of_blocks(backbone: Backbone, trunk: keras.Model) -> list[int]:
    """Where each block of the (possibly cut) `trunk` starts in its operations; one more entry: its end."""
    return [0, *(end + 1 for end in block_ends(backbone, trunk))]


def freeze_trunk(backbone: Backbone, model: keras.Model, unfrozen_blocks: int = 0) -> None:
    """Freeze the trunk except its last `unfrozen_blocks` blocks (the top block first)."""
    trunk = trunk_of(model)
    starts = _first_operation_of_blocks(backbone, trunk)
    first_trained = starts[len(starts) - 1 - unfrozen_blocks]
    trunk.trainable = unfrozen_blocks > 0
    for index, operation in enumerate(trunk.operations):
        if isinstance(operation, keras.layers.Layer):
            # Batch norms stay frozen in every phase, as fine-tuning practice has it: Keras passes fit's
            # training=True on into nested models, and a trainable batch norm would then normalise by each batch's
            # statistics and overwrite ImageNet's (measured: fine-tuning Lite0's block 5 so fell from 81% to 68%).
            operation.trainable = index >= first_trained and not isinstance(operation,
                                                                           keras.layers.BatchNormalization)


def split_before_block(backbone: Backbone, model: keras.Model, first_block: int) -> tuple[keras.Model, keras.Model]:
    """`model` cut in two before block `first_block` (top_block + 1: after the whole trunk), sharing its layers and
    weights.

    The first part takes raw images through the upscaling, the preprocessing and the trunk's blocks below
    `first_block`: the features a run computes once. The second takes those features through the remaining blocks
    (in inference mode, as in the model) and the head: what a cached-features phase trains. Chained, they compute
    exactly what `model` does.
    """
    trunk = trunk_of(model)
    starts = _first_operation_of_blocks(backbone, trunk)
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    for layer in model.layers[1:]:  # graph order: [upscale], [preprocess], trunk, head...
        if layer is trunk:
            break
        x = layer(x)
    if first_block > 1:
        cut = trunk.operations[starts[first_block - 1] - 1].output
        x = keras.Model(trunk.input, cut, name=f"{TRUNK_NAME}_below_block{first_block}")(x, training=False)
    extractor = keras.Model(inputs, x, name=f"{backbone.name}_below_block{first_block}")
    features = keras.Input(shape=x.shape[1:], name="features")
    y = features
    if first_block < len(starts):
        source = trunk.input if first_block == 1 else cut
        y = keras.Model(source, trunk.output, name=f"{TRUNK_NAME}_from_block{first_block}")(y, training=False)
    for layer in model.layers:
        if layer.name.startswith(HEAD_PREFIX) or layer.name == OUTPUT_NAME:
            y = layer(y)
    return extractor, keras.Model(features, y, name=f"{backbone.name}_from_block{first_block}")


def tally_transfer(backbone: Backbone, settings, num_classes: int, image_shape: tuple[int, int, int]) -> Tally:
    """The model `build_transfer` builds, counted without loading any weights: the trunk is fixed by the backbone and
    the image size, so it is built (without weights) and counted; the head, sized by the settings, is counted layer
    by layer without building it."""
    tally = Tally(image_shape)
    if image_shape[:2] != (settings.image_size, settings.image_size):
        tally.resize(settings.image_size)
    if backbone.preprocessing is not None:
        tally.conv(3, kernel=1)
    parameters, activations, shape = _trunk_size(backbone, settings.image_size, settings.top_block)
    tally.parameters += parameters
    tally.activations += activations - math.prod(shape)
    tally.layer(shape)
    if settings.head_pooling == "flatten":
        tally.flatten()
    else:
        tally.global_pool()
    if settings.head_batch_norm:
        tally.batch_norm()
    tally.classifier_head(settings.head_units, bool(settings.head_dropout), num_classes)
    if settings.head_dropout and not settings.head_units:
        tally.elementwise()
    return tally


@functools.lru_cache(maxsize=None)
def _trunk_size(backbone: Backbone, image_size: int, top_block: int) -> tuple[int, int, tuple[int, ...]]:
    """The parameters of the trunk cut after `top_block`, the values its layers output per image, and its output
    shape."""
    trunk = build_trunk(backbone, NO_WEIGHTS, image_size)
    end = block_ends(backbone, trunk)[top_block - 1]
    kept = [operation for operation in trunk.operations[: end + 1]
            if not isinstance(operation, keras.layers.InputLayer)]
    parameters = sum(int(np.prod(weight.shape)) for operation in kept for weight in getattr(operation, "weights", []))
    activations = sum(math.prod(operation.output.shape[1:]) for operation in kept)
    return parameters, activations, tuple(kept[-1].output.shape[1:])
