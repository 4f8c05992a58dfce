"""Data-parallel training over two devices of this CPU (CNNLAB_CPU_DEVICES=2), on TensorFlow (MirroredStrategy) and
JAX (keras.distribution.DataParallel), each in a fresh process, since the CPU must be split before the backend starts.

The same tiny model, from the same weights, trains one epoch (4 batches of 32, SGD) on one device and on two; the
devices are checked, not assumed: the weights live on both, and each training step sees its batch split in two (JAX:
the batch's sharding spans 2 devices and is not replicated; TensorFlow: the step runs once per replica, on CPU:0 and
CPU:1). Stated tolerance: the epoch's loss agrees to 1e-5 relative and every weight to 1e-6 (measured: 1.2e-7 and
6e-8 on JAX, 1.1e-7 and 1.5e-8 on TensorFlow, the order of float32 summation). steps_per_execution=2 is asked for:
the placement caps it where the backend needs (TensorFlow over several devices).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SCRIPT = r'''
import json
import numpy as np

from cnnlab.backends import fit_input, import_keras, placement_for, validation_input

import_keras()  # splits the CPU as CNNLAB_CPU_DEVICES asks, before the backend starts
import keras

from cnnlab.config import load_config
from cnnlab.data.batches import ShuffledBatches

backend = keras.backend.backend()
rng = np.random.default_rng(0)
x, labels = rng.random((129, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 129)
x_val, y_val = x[:9], keras.utils.to_categorical(labels[:9], 3)
seen = []


class Probe(keras.layers.Layer):
    """Records, as Keras traces the training step, how the batch reaches the layer."""

    def call(self, inputs):
        if backend == "jax":
            import jax

            jax.debug.inspect_array_sharding(inputs, callback=lambda sharding: seen.append(
                [len(sharding.device_set), sharding.is_fully_replicated]))
        elif backend == "tensorflow":
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            seen.append([context.num_replicas_in_sync if context else 0, inputs.device])
        return inputs


def train(devices, images, initial=None):
    placement = placement_for(load_config("seed", {"train.devices": devices, "train.precision": "float32"}))
    with placement.scope():
        inputs = keras.Input((8, 8, 3))
        hidden = Probe()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(hidden)))
        if initial is not None:
            model.set_weights(initial)
        initial = [weight.copy() for weight in model.get_weights()]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"],
                      **placement.compile_options(2))
        data, callbacks = fit_input(ShuffledBatches(x[:images], labels[:images], 3, 32, seed=0))
        history = model.fit(data, validation_data=validation_input(x_val, y_val), epochs=1, shuffle=False,
                            callbacks=callbacks, verbose=0)
    kernel = model.trainable_weights[0]
    if backend == "jax":
        where = len(kernel.value.sharding.device_set)
    else:
        where = len(getattr(kernel.value, "values", [kernel.value]))
    return {"devices": placement.devices, "record": placement.record(), "loss": history.history["loss"][0],
            "val_loss": history.history["val_loss"][0], "weights_on": where,
            "weights": [weight.tolist() for weight in model.get_weights()],
            "evaluate": model.evaluate(x, keras.utils.to_categorical(labels, 3), batch_size=10, verbose=0)}, initial


single, initial = train(1, 128)
seen.clear()
double, _ = train(2, 128, initial)
double["seen"] = list(seen)
odd, _ = train(2, 129, initial)  # a last batch of one image: fewer than the devices
print(json.dumps({"single": single, "double": double, "odd_loss": odd["loss"]}))
'''


@pytest.mark.parametrize("backend", [pytest.param(name, marks=pytest.mark.skipif(
    importlib.util.find_spec(name) is None, reason=f"{name} is not installed")) for name in ("tensorflow", "jax")])
def test_two_devices_train_as_one_does(backend):
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": backend, "CNNLAB_CPU_DEVICES": "2",
                               "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    single, double = result["single"], result["double"]
    assert (single["devices"], double["devices"]) == (1, 2)
    assert double["record"]["devices"] == 2 and len(double["record"]["device_names"]) == 2
    assert (single["weights_on"], double["weights_on"]) == (1, 2)
    if backend == "jax":
        assert [2, False] in double["seen"]  # a training batch, split over the two devices
    else:
        steps = [where for replicas, where in double["seen"] if replicas == 2]
        assert {where[-5:] for where in steps} == {"CPU:0", "CPU:1"}
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)
    for one, two in zip(single["weights"], double["weights"]):
        np.testing.assert_allclose(np.array(two), np.array(one), rtol=0, atol=1e-6)
    # evaluate, outside the scope, reads every image whatever the batch: the same scores
    assert double["evaluate"] == pytest.approx(single["evaluate"], rel=1e-5)
    # 129 images: the last batch holds one image, fewer than the devices, and is left out rather than failing
    assert np.isfinite(result["odd_loss"])


@pytest.mark.parametrize("preset", [["--preset", "seed"], ["--preset", "fast", "--set", "fastnet.widths=[8, 16, 16]",
                                                           "--set", "train.test_time_augmentation=0"]])
@pytest.mark.parametrize("backend", [pytest.param(name, marks=pytest.mark.skipif(
    importlib.util.find_spec(name) is None, reason=f"{name} is not installed")) for name in ("tensorflow", "jax")])
def test_cnnlab_train_on_two_devices_runs_the_whole_recipe(backend, preset, synthetic_archive, tmp_path):
    """The whole of `cnnlab train --devices 2` (callbacks, checkpoints, the fast net's lookahead, the reload of the
    best epoch), in a fresh process; the recorded scores come back from `cnnlab evaluate` on one device."""
    from conftest import (FLOAT32, TEST_LIMIT, TINY_MODEL, assert_evaluate_reproduces_the_recorded_scores,
                          run_cnnlab, run_metrics)

    run_dir = tmp_path / "run"
    # float32: under "auto" (bfloat16 on CPUs that have it) the loss recorded on two devices and the one re-evaluated
    # on one differed in the last printed digit (2.2818 and 2.2819 on JAX, Intel Xeon with AMX)
    done = run_cnnlab("train", "--data", synthetic_archive, "--devices", "2", "--epochs", "2", "--train-limit", "256",
                      "--val-size", "64", *TEST_LIMIT, "--batch-size", "32", *preset, *TINY_MODEL,
                      *FLOAT32, "--out", run_dir,
                      env={"KERAS_BACKEND": backend, "CNNLAB_CPU_DEVICES": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"computing on 2 CPU devices with Keras's {backend} backend" in done.stderr
    metrics = run_metrics(run_dir)
    assert (metrics["backend"], metrics["devices"], len(metrics["device_names"]), metrics["epochs"]) == \
        (backend, 2, 2, 2)
    assert [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]] == ["0", "1"]
    assert_evaluate_reproduces_the_recorded_scores(run_dir)
