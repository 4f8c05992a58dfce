"""`cnnlab bench`: how fast cnnlab trains and evaluates the seed model, next to plain Keras, in one process.

The baseline is the tutorial as people write it: the seed CNN as a Keras Sequential model, float32 NumPy arrays
scaled to [0, 1] handed to `model.fit(batch_size=32)` and `model.predict`, every setting at Keras's default. The
contenders train the same architecture on the same images through cnnlab's own pipeline (`build_model`,
`compile_for_phase`, `ShuffledBatches`, `predict_probabilities`): once in float32, to show what the pipeline alone
changes, and once as configured (by default: bfloat16 where the CPU has it natively).

Each contender trains for the same number of steps per round, in an order that rotates every round, so a machine
whose speed drifts treats them alike; each one's first round is a warm-up (graph tracing, memory pools) and is
left out. The ratio is the contender's images/s over the baseline's, both summed over the same timed rounds.

`cnnlab bench --backend all` asks another question: how fast each Keras backend runs cnnlab's own models (the seed
CNN and the fast net, each as its preset builds, compiles and feeds it, augmentation and test-time augmentation
included; weight averaging and checkpoints left out). The backend is fixed when Keras is imported, so each backend
runs in its own process (`python -m cnnlab.training.bench REQUEST`, see `time_presets`), one after the other, and prints its
rows as JSON for the parent to tabulate. The same warm-up and timed rounds apply, within each process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from cnnlab.config import RunConfig, load_config
from cnnlab.data import Dataset

BASELINE = "plain Keras (float32 arrays, defaults)"


@dataclass
class Contender:
    name: str
    precision: str = "float32"
    train_flops_per_image: float = 0.0  # a training step's (models/flops.py)
    train_images_per_second: float = 0.0
    eval_images_per_second: float = 0.0
    train_seconds: list[float] = dataclasses.field(default_factory=list)  # per round, the warm-up first
    eval_seconds: list[float] = dataclasses.field(default_factory=list)


def plain_keras_model(num_classes: int, image_shape: tuple[int, int, int]):
    """The tutorial's CNN written the way the tutorial writes it (cnnlab's seed preset builds the same layers)."""
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(image_shape),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.25),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def run_bench(data: Dataset, config: RunConfig | None = None, steps: int = 300, rounds: int = 4,
              log=print) -> list[Contender]:
    """Time the baseline and cnnlab's pipeline; returns one Contender per entry, the baseline first."""
    import keras

    from cnnlab.backends import placement_for
    from cnnlab.data.batches import ShuffledBatches, one_hot
    from cnnlab.evaluation.scoring import predict_probabilities
    from cnnlab.models.factory import build_model
    from cnnlab.models.flops import training_step_flops
    from cnnlab.models.recipe import compile_for_phase

    config = config or load_config("seed")
    batch_size = 32  # the baseline's, and the recipe's
    count = min(steps * batch_size, len(data.y_train))
    num_classes = len(data.class_names)
    image_shape = data.x_train.shape[1:]
    keras.utils.set_random_seed(config.train.seed)

    # The baseline's preprocessing happens once, before any timing, as in the tutorial.
    x_float, y_one_hot = data.x_train[:count].astype("float32") / 255.0, one_hot(data.y_train[:count], num_classes)
    x_test_float = data.x_test.astype("float32") / 255.0
    baseline = plain_keras_model(num_classes, image_shape)

    # The tutorial's model and recipe, whatever the preset: only its speed settings are taken.
    tutorial = load_config("seed")

    def cnnlab_model(precision: str):
        train = dataclasses.replace(tutorial.train, precision=precision,
                                    steps_per_execution=config.train.steps_per_execution,
                                    convolution_gradients=config.train.convolution_gradients)
        variant = dataclasses.replace(tutorial, train=train)
        placement = placement_for(variant)
        model = build_model(variant, num_classes, image_shape, placement)
        compile_for_phase(model, variant, variant.train.learning_rate, steps * rounds, placement)
        gradients = ", convolution gradients by convolution" if placement.convolution_gradients else ""
        return model, f"cnnlab, {precision}, steps_per_execution={config.train.steps_per_execution}{gradients}"

    configured = placement_for(config).precision
    entries = [
        (Contender(BASELINE, "float32", training_step_flops(baseline)),
         lambda: baseline.fit(x_float, y_one_hot, batch_size=batch_size, epochs=1, verbose=0),
         lambda: baseline.predict(x_test_float, verbose=0)),
    ]
    for precision in dict.fromkeys(["float32", configured]):
        model, name = cnnlab_model(precision)
        batches = ShuffledBatches(data.x_train[:count], data.y_train[:count], num_classes, batch_size,
                                  config.train.seed)
        entries.append((
            Contender(name, precision, training_step_flops(model)),
            lambda model=model, batches=batches: _train_one_epoch(model, batches),
            lambda model=model: predict_probabilities(model, data.x_test),
        ))

    alternate_rounds(entries, rounds, log)
    for contender, _, _ in entries:
        contender.train_images_per_second = count * rounds / sum(contender.train_seconds[1:])
        contender.eval_images_per_second = len(data.y_test) * rounds / sum(contender.eval_seconds[1:])
    return [contender for contender, _, _ in entries]


def alternate_rounds(entries, rounds: int, log=print, name: str = "round") -> None:
    """Run each entry's (record, train job, eval job) once per round, a warm-up round first, appending each job's
    seconds to `record.train_seconds` / `record.eval_seconds`. The order rotates every round, so a shared machine's
    drift treats the entries alike."""
    for round_index in range(rounds + 1):
        shift = round_index % len(entries)
        for record, train_job, eval_job in entries[shift:] + entries[:shift]:
            for timings, job in ((record.train_seconds, train_job), (record.eval_seconds, eval_job)):
                start = time.perf_counter()
                job()
                timings.append(time.perf_counter() - start)
        log(f"{name} {round_index}{' (warm-up, not counted)' if round_index == 0 else ''} done")


def _train_one_epoch(model, batches) -> None:
    from cnnlab.backends import fit_input

    data, callbacks = fit_input(batches)
    model.fit(data, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)


def format_results(contenders: list[Contender], peaks: dict[str, float]) -> str:
    """The table: images/s and ratios to the baseline, and the GFLOP/s each one's training achieves, with its share
    of the convolution peak measured here in its precision (`attainable_peaks`)."""
    baseline = contenders[0]
    width = max(len(contender.name) for contender in contenders)
    lines = [f"{'':{width}} {'train img/s':>12} {'ratio':>6} {'eval img/s':>11} {'ratio':>6} {'train GFLOP/s':>14} "
             f"{'of peak':>7}"]
    for contender in contenders:
        achieved = contender.train_flops_per_image * contender.train_images_per_second / 1e9
        lines.append(
            f"{contender.name:{width}} {contender.train_images_per_second:12,.0f} "
            f"{contender.train_images_per_second / baseline.train_images_per_second:5.2f}x "
            f"{contender.eval_images_per_second:11,.0f} "
            f"{contender.eval_images_per_second / baseline.eval_images_per_second:5.2f}x "
            f"{achieved:14,.1f} {_share(achieved, peaks.get(f'conv 3x3 {contender.precision}')):>7}"
        )
    return "\n".join(lines)


def _share(achieved: float, peak: float | None) -> str:
    return "-" if not peak else f"{achieved / peak:.0%}"


# Sizes at which this machine's attainable rate shows: a square matmul, and a 3x3 convolution of the size the fast
# net's middle layers run at (a batch of 64 at 16x16 with 256 channels).
MATMUL_SIZE = 2048
CONV_SHAPE, CONV_CHANNELS = (64, 16, 16, 256), 256


def attainable_peaks(precisions, seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of a large matmul and a 3x3 convolution through `keras.ops` on this backend and machine, in each
    precision, each repeated for about `seconds` after a warm-up call: the most the models' own layers could hope
    for here, measured, not taken from a datasheet."""
    import keras
    from keras import ops

    peaks = {}
    for precision in dict.fromkeys(precisions):
        a, b = (ops.cast(keras.random.normal((MATMUL_SIZE, MATMUL_SIZE), seed=seed), precision) for seed in (1, 2))
        images = ops.cast(keras.random.normal(CONV_SHAPE, seed=3), precision)
        kernel = ops.cast(keras.random.normal((3, 3, CONV_SHAPE[-1], CONV_CHANNELS), seed=4), precision)
        jobs = {"matmul": (lambda: ops.matmul(a, b), 2 * MATMUL_SIZE**3),
                "conv 3x3": (lambda: ops.conv(images, kernel, padding="same"),
                             2 * math.prod(CONV_SHAPE[:3]) * 9 * CONV_SHAPE[-1] * CONV_CHANNELS)}
        for name, (job, flops) in jobs.items():
            ops.convert_to_numpy(job())  # warm-up: kernels chosen, memory pools filled
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                result, calls = job(), calls + 1
            ops.convert_to_numpy(result)  # asynchronous backends (JAX) finish here
            peaks[f"{name} {precision}"] = flops * calls / (time.perf_counter() - start) / 1e9
    return peaks


def format_peaks(peaks: dict[str, float]) -> str:
    return "attainable here: " + ", ".join(f"{name} {rate:,.0f} GFLOP/s" for name, rate in peaks.items())


# ---- every backend, each in its own process -------------------------------------------------------------------------

BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_PRESETS = ("seed", "fast")  # the tutorial's CNN and the fast net


@dataclass
class BackendRow:
    backend: str
    preset: str
    model: str = ""  # the model's label, as a report names it
    batch_size: int = 0
    train_images_per_second: float | None = None
    eval_images_per_second: float | None = None
    train_gflops_per_second: float | None = None  # what its training achieved (models/flops.py)
    peak_gflops_per_second: float | None = None  # a 3x3 convolution's, in its precision (attainable_peaks)
    problem: str | None = None  # why there is no number: not installed, or the one-line error


def time_presets(overrides: dict, steps: int, rounds: int, presets=BACKEND_PRESETS, log=print) -> list[BackendRow]:
    """Images/s of each preset's model (`overrides` applied) on the backend this process imported: `steps` batches of
    the preset's size per round, then as many test images (its test-time augmentation included), after one warm-up
    round."""
    import keras

    from cnnlab.backends import placement_for
    from cnnlab.evaluation.scoring import predict_probabilities
    from cnnlab.models import model_label
    from cnnlab.models.flops import training_step_flops

    rows, conv_peaks = [], {}  # the peak of each precision, measured once in this process
    for preset in presets:
        config = load_config(preset, overrides)
        train, precision = config.train, placement_for(config).precision
        if precision not in conv_peaks:
            conv_peaks[precision] = attainable_peaks([precision])[f"conv 3x3 {precision}"]
        setup = preset_setup(config, steps * train.batch_size, total_steps=steps * (rounds + 1))
        timed = Contender(preset)
        alternate_rounds([(timed, lambda: _train_one_epoch(setup.model, setup.batches),
                           lambda: predict_probabilities(setup.model, setup.x_test,
                                                         batch_size=train.evaluation_batch_size,
                                                         augmentation=train.test_time_augmentation))],
                         rounds, log, name=f"{keras.backend.backend()} {preset}: round")
        train_rate = len(setup.y_train) * rounds / sum(timed.train_seconds[1:])
        rows.append(BackendRow(keras.backend.backend(), preset, model_label(config), train.batch_size, train_rate,
                               len(setup.x_test) * rounds / sum(timed.eval_seconds[1:]),
                               training_step_flops(setup.model) * train_rate / 1e9, conv_peaks[precision]))
    return rows


@dataclass
class PresetSetup:
    model: object
    batches: object
    x_train: object
    y_train: object
    x_test: object
    num_classes: int


def preset_setup(config: RunConfig, count: int, total_steps: int, test_count: int | None = None) -> PresetSetup:
    """The preset's model built, initialised from the data and compiled as `cnnlab train` does it, with its shuffled,
    augmented batches of the first `count` training images (at most all of them) and as many test images (or
    `test_count`)."""
    import keras

    from cnnlab.backends import placement_for
    from cnnlab.data import load_dataset
    from cnnlab.data.augment import Augmentation
    from cnnlab.data.batches import ShuffledBatches
    from cnnlab.models import prepare_with_data
    from cnnlab.models.factory import ModelFactory

    train = config.train
    data = load_dataset(config.data, train.seed)
    count = min(count, len(data.y_train))
    x_train, y_train, x_test = data.x_train[:count], data.y_train[:count], data.x_test[:test_count or count]
    num_classes = len(data.class_names)
    keras.utils.set_random_seed(train.seed)
    factory = ModelFactory(config, placement_for(config))
    model = factory.build(num_classes, x_train.shape[1:])
    prepare_with_data(model, config, x_train)
    factory.compile(model, train.learning_rate, total_steps=total_steps)
    batches = ShuffledBatches(x_train, y_train, num_classes, train.batch_size, train.seed,
                              augmentation=Augmentation(x_train, train.seed, config.data.flip, config.data.translate))
    return PresetSetup(model, batches, x_train, y_train, x_test, num_classes)


def run_backends(backends, overrides: dict, steps: int, rounds: int, log=print) -> list[BackendRow]:
    """`time_presets` on each backend, one fresh `python -m cnnlab.training.bench` process after another; a backend that is not
    installed, or whose process fails, gets a row saying so instead of stopping the others."""
    rows = []
    for backend in backends:
        if importlib.util.find_spec(backend) is None:
            rows += [BackendRow(backend, preset, problem="not installed") for preset in BACKEND_PRESETS]
            continue
        request = json.dumps({"overrides": overrides, "steps": steps, "rounds": rounds})
        child = subprocess.Popen([sys.executable, "-m", "cnnlab.training.bench", request], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "KERAS_BACKEND": backend})
        last_words = "no message"
        for line in child.stderr:  # as they come: a real run takes minutes per backend
            if line.startswith(f"{backend} "):  # the child's progress; the rest is the backend's own chatter
                log(line.rstrip())
            elif line.strip():
                last_words = line.strip()
        output = child.stdout.read()
        if child.wait() != 0:
            rows += [BackendRow(backend, preset, problem=f"failed: {last_words}") for preset in BACKEND_PRESETS]
            continue
        rows += [BackendRow(**row) for row in json.loads(output)]
    return rows


def format_backend_rows(rows: list[BackendRow]) -> str:
    lines = [f"{'backend':11} {'model':34} {'batch':>5} {'train img/s':>12} {'eval img/s':>11} {'train GFLOP/s':>14} "
             f"{'of peak':>7}"]
    for row in rows:
        if row.problem:
            lines.append(f"{row.backend:11} {row.preset + ' preset':34} {row.problem}")
        else:
            lines.append(f"{row.backend:11} {row.model:34} {row.batch_size:5} {row.train_images_per_second:12,.0f} "
                         f"{row.eval_images_per_second:11,.0f} {row.train_gflops_per_second:14,.1f} "
                         f"{_share(row.train_gflops_per_second, row.peak_gflops_per_second):>7}")
    return "\n".join(lines)


def _child_main(request: str) -> int:
    """One backend's rows as JSON on stdout (the backend is KERAS_BACKEND's); progress on stderr."""
    from cnnlab.backends import import_keras

    asked = json.loads(request)
    import_keras()
    rows = time_presets(asked["overrides"], asked["steps"], asked["rounds"],
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps([dataclasses.asdict(row) for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
