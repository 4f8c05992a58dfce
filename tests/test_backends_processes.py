"""One run over two processes on 127.0.0.1 (JAX, through keras.distribution.initialize), each with one CPU device;
and TensorFlow's one-line refusal of several processes.

Both processes train the same tiny model 2 epochs, each feeding its half of every batch of 32; the losses must be
those of one process training over two devices of its own (CNNLAB_CPU_DEVICES=2) to 1e-5 relative (measured: equal to
the last bit), and only process 0 writes into the run directory (`Placement.working_dir`).
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import free_port

pytest.importorskip("jax")

SCRIPT = r'''
import json
import sys
from pathlib import Path

import numpy as np

from cnnlab.backends import Cluster, fit_input, import_keras, placement_for

run_dir, cluster = Path(sys.argv[1]), Cluster(sys.argv[2], 2, int(sys.argv[3])) if len(sys.argv) > 2 else None
import_keras(cluster)
import keras

from cnnlab.config import load_config
from cnnlab.data.batches import ShuffledBatches

rng = np.random.default_rng(0)
x, labels = rng.random((128, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 128)
# one device in each of two processes, or (the reference) two devices in one process
placement = placement_for(load_config("seed", {"train.devices": 1 if cluster else 2, "train.precision": "float32"}))
keras.utils.set_random_seed(0)
with placement.scope():
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                  **placement.compile_options(1))
    data, callbacks = fit_input(ShuffledBatches(x, labels, 3, 32, seed=0))
    history = model.fit(data, epochs=2, shuffle=False, callbacks=callbacks, verbose=0).history["loss"]
with placement.working_dir(run_dir) as where:
    where.mkdir(parents=True, exist_ok=True)
    (where / f"written-by-{placement.process_index}").write_text(json.dumps(history))
print(json.dumps({"loss": history, "record": placement.record(), "chief": placement.is_chief,
                  "batch": len(data[0][0]), "where": str(where)}))
'''


def start(*args, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "KERAS_BACKEND": "jax", **env})


def result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert "Gloo" not in out  # JAX's notice that the processes connected is start-up noise, held back
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_two_processes_train_as_two_devices_of_one_and_only_the_chief_writes(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    processes = [start(tmp_path / "run", coordinator, index) for index in range(2)]
    chief, worker = [result(process) for process in processes]
    reference = result(start(tmp_path / "reference", CNNLAB_CPU_DEVICES="2"))
    assert (chief["chief"], worker["chief"]) == (True, False)
    for process in (chief, worker):
        assert process["record"]["processes"] == 2 and process["record"]["devices"] == 1
        assert process["batch"] == 16  # its half of each batch of 32
        assert process["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert reference["record"]["devices"] == 2 and reference["batch"] == 32
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["written-by-0"]
    assert not os.path.exists(worker["where"])  # the worker's private copy is gone


def test_tensorflow_refuses_several_processes_and_points_to_jax():
    done = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--coordinator", "127.0.0.1:1", "--processes", "2",
                           "--process-id", "1", "--data", "/nonexistent"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "cnnlab: error: several processes: Keras 3 cannot fit under TensorFlow's " \
                          "MultiWorkerMirroredStrategy (keras-team/keras#20585); use KERAS_BACKEND=jax\n"


def cnnlab_process(index, coordinator, *args, faults=()):
    """`python -m cnnlab ARGS` as process `index` of 2 (or tests/faults.py's harness around it)."""
    harness = [os.path.join(os.path.dirname(__file__), "faults.py"), *faults, "--"] if faults else ["-m", "cnnlab"]
    return subprocess.Popen(
        [sys.executable, *harness, *map(str, args), "--coordinator", coordinator, "--processes", "2",
         "--process-id", str(index)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"})


def epochs_in(history_csv):
    return [int(line.split(",")[0]) for line in history_csv.read_text().splitlines()[1:]]


@pytest.mark.slow
def test_two_cli_processes_write_one_run_and_resume_together_after_one_is_killed(tmp_path, synthetic_archive):
    from conftest import TINY_MODEL

    run_dir = tmp_path / "run"
    train = ["train", "--data", synthetic_archive, "--epochs", "3", "--train-limit", "256", "--val-size", "64",
             "--batch-size", "32", "--out", run_dir, *TINY_MODEL]
    coordinator = f"127.0.0.1:{free_port()}"
    # The chief is killed half-way through saving its second epoch's state; the worker, left waiting on it, is ended.
    chief = cnnlab_process(0, coordinator, *train, faults=("state", "2"))
    worker = cnnlab_process(1, coordinator, *train)
    chief.communicate(timeout=600)
    assert chief.returncode == -9
    worker.kill()
    worker.communicate(timeout=60)
    assert 1 <= len(epochs_in(run_dir / "history.csv")) < 3

    coordinator = f"127.0.0.1:{free_port()}"
    resumed = [cnnlab_process(index, coordinator, "train", "--resume", run_dir) for index in range(2)]
    (chief_out, chief_err), (worker_out, worker_err) = [process.communicate(timeout=600) for process in resumed]
    assert [process.returncode for process in resumed] == [0, 0], chief_err[-2000:] + worker_err[-2000:]
    assert "resuming at epoch 2" in chief_err and "resuming at epoch 2" in worker_err  # both from the chief's state
    assert worker_out.strip().splitlines()[-1] == "process 1 of 2 finished; process 0 wrote the run directory"
    assert epochs_in(run_dir / "history.csv") == [0, 1, 2]  # every epoch once, across the kill
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["processes"], metrics["devices"], metrics["epochs"]) == (2, 1, 3)
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in chief_out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # nothing of the worker's lands beside it
