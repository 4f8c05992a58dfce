"""What training a VGG16 conv block costs against running it, per image, on this machine and backend.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/conv_gradients.py --spatial 2 --batch 32 [--xla] [--by-convolution]

The model is block 5 of VGG16 as CIFAR-10 at 32 px feeds it (three 512-channel 3x3 convolutions on a 2x2 map, with
`--spatial 8`: at 128 px), its pooling and a small dense head; Adam, categorical cross-entropy, 8 steps per call.
Random inputs, 16 batches timed after a warm-up fit of two batches. Prints images/s for `fit` and for `predict`
and their ratio: a gradient step should cost about three forward passes, so a ratio far below 1/3 means the
backend's convolution gradients are slow for these shapes.
"""

import argparse
import time

import keras
import numpy as np

from cnnlab.models.convolution import gradients_by_convolution, same_conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spatial", type=int, default=2, help="height and width of the block's input map")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--xla", action="store_true", help="compile with jit_compile=True")
    parser.add_argument("--by-convolution", action="store_true",
                        help="the convolutions' gradients by forward convolutions (cnnlab.models.convolution)")
    args = parser.parse_args()
    inputs = keras.Input((args.spatial, args.spatial, 512))
    x = inputs
    with gradients_by_convolution(args.by_convolution):
        for _ in range(3):
            x = same_conv(512, 3, activation="relu")(x)
    x = keras.layers.Dense(512, activation="relu")(keras.layers.Flatten()(keras.layers.MaxPooling2D()(x)))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", jit_compile=args.xla,
                  steps_per_execution=8)
    count = args.batch * 16
    rng = np.random.default_rng(0)
    images = rng.random((count, args.spatial, args.spatial, 512), dtype="float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, count)]
    model.fit(images[: 2 * args.batch], labels[: 2 * args.batch], batch_size=args.batch, verbose=0)
    model.predict(images[: 2 * args.batch], batch_size=args.batch, verbose=0)
    started = time.perf_counter()
    model.fit(images, labels, batch_size=args.batch, verbose=0)
    training = count / (time.perf_counter() - started)
    started = time.perf_counter()
    model.predict(images, batch_size=args.batch, verbose=0)
    inference = count / (time.perf_counter() - started)
    print(f"{keras.backend.backend()}, {args.spatial}x{args.spatial} maps, batch {args.batch}"
          f"{', XLA' if args.xla else ''}{', gradients by convolution' if args.by_convolution else ''}: training {training:.1f} images/s, inference {inference:.1f} images/s, "
          f"ratio {training / inference:.3f}")


if __name__ == "__main__":
    main()
