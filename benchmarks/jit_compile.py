"""XLA on or off: training img/s of the seed CNN with `jit_compile=True` against `False`, per Keras backend.

    .venv/bin/python benchmarks/jit_compile.py [--backends tensorflow jax] [--steps 200] [--rounds 3]

cnnlab leaves `jit_compile` to Keras ("auto") except where this measurement shows XLA slower: TensorFlow on a CPU.
Each backend runs in its own process (Keras fixes the backend at import); inside it the two settings alternate
round by round, so the drift of a shared machine treats them alike, and each setting's first round (tracing,
compilation) is left out. Images are random: speed does not depend on their values.
"""

import argparse
import os
import subprocess
import sys
import time


def images_per_second(steps: int, rounds: int) -> dict[bool, float]:
    import keras
    import numpy as np

    from cnnlab.training.bench import plain_keras_model

    rng = np.random.default_rng(0)
    x = rng.random((steps * 32, 32, 32, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, len(x)), 10)
    models = {}
    for setting in (False, True):
        models[setting] = plain_keras_model(10, (32, 32, 3))  # CIFAR-10's images
        models[setting].compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=setting)
    seconds = {False: 0.0, True: 0.0}
    for round_index in range(rounds + 1):
        for setting in (False, True) if round_index % 2 else (True, False):
            start = time.perf_counter()
            models[setting].fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
            if round_index:  # the first round traces and compiles
                seconds[setting] += time.perf_counter() - start
    return {setting: rounds * len(x) / total for setting, total in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--steps", type=int, default=200, help="training steps of 32 images per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per setting, after one warm-up")
    parser.add_argument("--one-backend", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one_backend:
        rates = images_per_second(args.steps, args.rounds)
        print(f"{os.environ['KERAS_BACKEND']:<11} {rates[False]:>10,.0f} {rates[True]:>10,.0f} "
              f"{rates[True] / rates[False]:>10.2f}x", flush=True)
        return
    print(f"seed CNN, batch 32, float32, {args.steps} steps x {args.rounds} timed rounds per setting")
    print(f"{'backend':<11} {'XLA off':>10} {'XLA on':>10} {'on / off':>11}  (training img/s)", flush=True)
    for backend in args.backends:
        subprocess.run([sys.executable, __file__, "--one-backend", "--steps", str(args.steps), "--rounds",
                        str(args.rounds)], env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
                       check=True)


if __name__ == "__main__":
    main()
