"""The kernels of a training step where cnnlab has a faster way on TensorFlow, timed one by one: each convolution's
forward pass and both gradients, TensorFlow's gradient kernels against the forward convolutions cnnlab can compute
them with (cnnlab.models.convolution); then Adam's step over the seed CNN's weights, Keras's against TensorFlow's
fused kernel (`TensorFlowEngine.fused`).

    .venv/bin/python benchmarks/step_kernels.py [--batch 32] [--shapes seed|fast] [--calls 30]

Prints milliseconds and GFLOP/s per kernel (a convolution's 2 x batch x height x width x 9 x in x out FLOPs; the
input gradient of the first layer, whose input is the images, is not needed and not timed). Random inputs, each kernel
in its own tf.function, two warm-up calls, then `--calls` timed ones. TensorFlow only: it times TensorFlow's kernels.
"""

import argparse
import time

import keras
import tensorflow as tf

from cnnlab.backends.tensorflow import ENGINE
from cnnlab.config import load_config
from cnnlab.models.convolution import input_gradient, kernel_gradient
from cnnlab.models.factory import build_model

# (height = width, in channels, out channels) of each 3x3 'same' convolution
SHAPES = {
    "seed": [(32, 3, 32), (32, 32, 32), (16, 32, 64), (16, 64, 64)],  # the tutorial's CNN
    "fast": [(31, 24, 64), (15, 64, 64), (15, 64, 256), (7, 256, 256), (3, 256, 256)],  # the fast net's
}


def milliseconds(function, calls: int) -> float:
    function(), function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls * 1e3


def kernels(images, kernel, upstream) -> dict:
    """The five kernels for one convolution, each a function of no arguments."""
    strides = [1, 1, 1, 1]
    return {
        "forward": lambda: tf.nn.conv2d(images, kernel, 1, "SAME"),
        "input gradient, TensorFlow's": lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(images), filter=kernel, out_backprop=upstream, strides=strides, padding="SAME"),
        "input gradient, by convolution": lambda: input_gradient(upstream, kernel),
        "kernel gradient, TensorFlow's": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=images, filter_sizes=tf.shape(kernel), out_backprop=upstream, strides=strides, padding="SAME"),
        "kernel gradient, by convolution": lambda: kernel_gradient(images, upstream, (3, 3)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shapes", choices=list(SHAPES), default="seed")
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    print(f"| convolution (batch {args.batch}) | kernel | ms | GFLOP/s |\n|---|---|---:|---:|")
    for size, inputs, outputs in SHAPES[args.shapes]:
        images = tf.random.normal((args.batch, size, size, inputs))
        kernel = tf.random.normal((3, 3, inputs, outputs))
        upstream = tf.random.normal((args.batch, size, size, outputs))
        flops = 2 * args.batch * size * size * 9 * inputs * outputs
        for name, function in kernels(images, kernel, upstream).items():
            if name.startswith("input") and inputs == 3:
                continue
            taken = milliseconds(tf.function(function), args.calls)
            print(f"| {size}x{size}, {inputs} to {outputs} | {name} | {taken:.2f} | {flops / taken / 1e6:.0f} |",
                  flush=True)
    for name, taken in adam_steps(args.calls).items():
        print(f"| the seed CNN's weights | {name} | {taken:.2f} | - |")


def adam_steps(calls: int) -> dict[str, float]:
    """Milliseconds of one Adam step over the seed CNN's weights, Keras's and fused."""
    weights = build_model(load_config("seed", {"train.precision": "float32"}), 10, (32, 32, 3)).trainable_variables
    gradients = [tf.random.normal(weight.shape) * 1e-3 for weight in weights]
    taken = {}
    for name, optimizer in (("Adam step, Keras's", keras.optimizers.Adam(1e-3)),
                            ("Adam step, TensorFlow's fused kernel", ENGINE.fused(keras.optimizers.Adam(1e-3)))):
        optimizer.build(weights)
        taken[name] = milliseconds(tf.function(lambda optimizer=optimizer: optimizer.apply(gradients, weights)), calls)
    return taken


if __name__ == "__main__":
    main()
