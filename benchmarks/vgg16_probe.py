"""Which input size and which VGG16 block to transfer from: a linear probe on frozen features, on the validation split.

    .venv/bin/python benchmarks/vgg16_probe.py --data PATH/TO/cifar-10-python.tar.gz \
        --weights vgg16_hed_notop.weights.h5 [--sizes 32 64 96] [--train 3000] [--val 1000]

For each input size (CIFAR-10's 32 px upscaled inside the model, as `vgg16.image_size` does) and each weights file
(the given one and random initialisation, seeded), the images go once through VGG16's frozen base (with
keras.applications.vgg16 preprocessing); the output of each block's pooling layer is averaged over its positions
(global average pooling, so every block gives one vector per image) and a softmax regression is fitted on it. Its
accuracy on held-out validation images (carved from the training set exactly as `cnnlab train` carves them; never
the test set) says how linearly separable CIFAR-10's classes are in that block's features: the usual first question
of a transfer recipe (which layer, which resolution). The extraction speed (images/s through the whole base, on
this machine) is printed beside it, as upscaling costs in proportion to the pixels.

A probe on a few thousand images is a ranking, not a final accuracy: the presets' numbers come from `cnnlab train`.
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from cnnlab.config import DataConfig
from cnnlab.data import load_dataset, make_splits
from cnnlab.models.transfer import CAFFE
from cnnlab.models.transfer.network import affine_preprocessing, build_trunk
from cnnlab.models.vgg16 import BACKBONE, NUM_BLOCKS, Vgg16Config


def block_features(size: int, weights: str, images: np.ndarray, seed: int) -> tuple[list[np.ndarray], float]:
    """Each block's pooled output, averaged over positions, for `images`; and the images per second."""
    keras.utils.set_random_seed(seed)
    base = build_trunk(BACKBONE, Vgg16Config(weights=weights, image_size=size))
    pooled = [keras.layers.GlobalAveragePooling2D()(base.get_layer(f"block{block}_pool").output)
              for block in range(1, NUM_BLOCKS + 1)]
    pooled_base = keras.Model(base.input, pooled)
    inputs = keras.Input(shape=images.shape[1:])
    x = keras.layers.Resizing(size, size)(inputs) if images.shape[1] != size else inputs
    extractor = keras.Model(inputs, pooled_base(affine_preprocessing(CAFFE)(x)))
    extractor.predict(images[:32], batch_size=32, verbose=0)  # build and warm up outside the timing
    started = time.perf_counter()
    features = extractor.predict(images, batch_size=128, verbose=0)
    return [np.asarray(f, dtype="float32") for f in features], len(images) / (time.perf_counter() - started)


def probe_accuracy(train: np.ndarray, y_train: np.ndarray, val: np.ndarray, y_val: np.ndarray, classes: int,
                   seed: int) -> float:
    """Validation accuracy of a softmax regression on standardised features."""
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=train.shape[1:]),
                              keras.layers.Dense(classes, "softmax", kernel_regularizer=keras.regularizers.L2(1e-4))])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit((train - mean) / std, y_train, batch_size=128, epochs=60, verbose=0)
    return float(model.evaluate((val - mean) / std, y_val, verbose=0)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True, help="a VGG16 no-top weights file (or imagenet)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--train", type=int, default=3000, help="training images for the probe")
    parser.add_argument("--val", type=int, default=1000, help="validation images it is scored on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_dataset(DataConfig(source=args.data), args.seed)
    splits = make_splits(dataset, 0.1, args.seed, train_limit=args.train)
    x_val, y_val = splits.x_val[: args.val], splits.y_val[: args.val]
    images = np.concatenate([splits.x_train, x_val])
    classes = len(splits.class_names)
    print(f"probe: {len(splits.y_train)} training and {len(y_val)} validation images; validation accuracy of a "
          f"softmax regression on each block's average-pooled features")
    print(f"| weights | size | images/s | " + " | ".join(f"block {b}" for b in range(1, NUM_BLOCKS + 1)) + " |")
    print("|---|---:|---:|" + "---:|" * NUM_BLOCKS)
    for weights in dict.fromkeys((args.weights, "none")):  # --weights none: the random rows alone
        for size in args.sizes:
            features, speed = block_features(size, weights, images, args.seed)
            scores = [probe_accuracy(f[: len(splits.y_train)], splits.y_train, f[len(splits.y_train):], y_val,
                                     classes, args.seed) for f in features]
            name = "random" if weights == "none" else Path(weights).name
            print(f"| {name} | {size} | {speed:.0f} | " + " | ".join(f"{100 * s:.1f}" for s in scores) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
