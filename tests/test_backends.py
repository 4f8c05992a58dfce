"""Where a run computes: device choice, precision "auto" per device, jit, start-up noise, and `cnnlab devices`.

The choices are pure functions of the backend, the device kind, its compute capability and the CPU's flags, so every
GPU case is tested here without a GPU. The start-up checks run `python -m cnnlab` in fresh processes, as a user
does; data-parallel training itself is in test_backends_distributed.py.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnlab import backends
from cnnlab.backends import machine
from cnnlab.backends import (Devices, Engine, choose_device_count, choose_precision, current_engine, engine_for,
                             placement_for)
from cnnlab.common.errors import CnnlabError
from cnnlab.common.cores import usable_cores
from cnnlab.config import load_config
from conftest import TINY_MODEL


@pytest.mark.parametrize("device_kind, capability, cpu_bfloat16, expected", [
    ("cpu", None, True, ("bfloat16", "this CPU computes bfloat16 natively")),
    ("cpu", None, False, ("float32", "no native bfloat16 on this CPU")),
    ("gpu", (9, 0), False, ("bfloat16", "GPU of compute capability 9.0 computes bfloat16 natively")),
    ("gpu", (8, 0), False, ("bfloat16", "GPU of compute capability 8.0 computes bfloat16 natively")),
    ("gpu", (7, 5), True, ("float16", "GPU of compute capability 7.5: float16 tensor cores, no bfloat16; "
                                      "loss-scaled")),
    ("gpu", (7, 0), False, ("float16", "GPU of compute capability 7.0: float16 tensor cores, no bfloat16; "
                                       "loss-scaled")),
    ("gpu", (6, 1), True, ("float32", "GPU of compute capability 6.1 has no fast half precision")),
    ("gpu", None, True, ("float32", "GPU of unknown compute capability")),
    ("tpu", None, False, ("bfloat16", "TPUs compute bfloat16 natively")),
])
def test_auto_precision_follows_the_device(device_kind, capability, cpu_bfloat16, expected):
    assert choose_precision("auto", device_kind, capability, cpu_bfloat16) == expected


@pytest.mark.parametrize("asked", ["float32", "bfloat16", "float16"])
def test_a_precision_asked_for_is_kept_on_any_device(asked):
    for device_kind, capability in (("cpu", None), ("gpu", (6, 0)), ("gpu", (9, 0))):
        assert choose_precision(asked, device_kind, capability, True) == (asked, "asked for")


def installed_engine(backend: str) -> Engine:
    """The engine of `backend`, whose module imports the backend: the test is skipped where it is not installed."""
    pytest.importorskip(backend)
    return engine_for(backend)


class OneDevice(Engine):
    """An engine with nothing but `Engine`'s defaults."""

    name = "plain"

    def detect_devices(self) -> Devices:
        return Devices("cpu", ("cpu:0", "cpu:1"))


def test_an_engine_by_default_trains_on_one_device_in_one_process_as_keras_decides():
    engine = OneDevice()
    assert engine.processes() == (0, 1)
    assert engine.distributed_devices() == 1
    assert engine.split_host_cpu(4) is None
    assert engine.global_device_names(1) == ("cpu:0",)
    assert engine.jit_compile("cpu") == engine.jit_compile("gpu") == "auto"
    assert engine.steps_per_execution_limit(1) is None
    batches = object()
    assert engine.fit_input(batches) == (batches, [])  # `fit` reads the PyDataset itself, with no callback
    engine.refuse_devices(0, 1)
    with pytest.raises(CnnlabError, match=r"^--devices 2: Keras's plain backend trains on one device; use "
                                          r"KERAS_BACKEND=jax or tensorflow for several$"):
        engine.refuse_devices(2, 2)
    with pytest.raises(CnnlabError, match=r"^several processes: Keras's plain backend trains in one process; use "
                                          r"KERAS_BACKEND=jax$"):
        engine.initialize("127.0.0.1:1234", 2, 1)
    with pytest.raises(NotImplementedError):
        engine.data_parallel(("cpu:0", "cpu:1"))


def test_the_engine_in_use_is_the_one_of_keras_backend():
    import keras

    engine = current_engine()
    assert engine is engine_for(keras.backend.backend()) and engine.name == keras.backend.backend()
    assert backends.detect_devices() == engine.detect_devices()


def test_jit_compile_is_left_to_keras_except_tensorflow_on_cpu():
    assert installed_engine("tensorflow").jit_compile("cpu") is False
    for backend, device_kind in (("tensorflow", "gpu"), ("jax", "cpu"), ("jax", "gpu"), ("torch", "cpu")):
        assert installed_engine(backend).jit_compile(device_kind) == "auto"


def test_steps_per_execution_are_limited_on_torch_and_on_tensorflow_over_several_devices():
    tensorflow, jax, torch = (installed_engine(backend) for backend in ("tensorflow", "jax", "torch"))
    assert (tensorflow.steps_per_execution_limit(1), tensorflow.steps_per_execution_limit(2)) == (None, 1)
    assert (jax.steps_per_execution_limit(1), jax.steps_per_execution_limit(2)) == (None, None)
    assert torch.steps_per_execution_limit(1) == 1


def test_only_jax_runs_several_processes_and_the_others_say_so_in_one_line():
    with pytest.raises(CnnlabError, match=r"^several processes: Keras 3 cannot fit under TensorFlow's "
                                          r"MultiWorkerMirroredStrategy \(keras-team/keras#20585\); use "
                                          r"KERAS_BACKEND=jax$"):
        installed_engine("tensorflow").initialize("127.0.0.1:1234", 2, 1)
    with pytest.raises(CnnlabError, match=r"^several processes: Keras's torch backend trains in one process; use "
                                          r"KERAS_BACKEND=jax$"):
        installed_engine("torch").initialize("127.0.0.1:1234", 2, 1)


TWO_GPUS = Devices("gpu", ("/device:GPU:0", "/device:GPU:1"), (8, 0))


def test_device_count_is_the_one_asked_for_or_all():
    assert choose_device_count(1, TWO_GPUS, installed_engine("tensorflow")) == 1
    assert choose_device_count(2, TWO_GPUS, installed_engine("jax")) == 2
    assert choose_device_count(0, TWO_GPUS, installed_engine("tensorflow")) == 2
    # all of one is one, on any backend
    assert choose_device_count(0, Devices("cpu", ("cpu:0",)), installed_engine("torch")) == 1


def test_more_devices_than_there_are_is_refused_in_one_line():
    with pytest.raises(CnnlabError, match=r"^--devices 3: this machine has 2 GPU devices for Keras's jax backend$"):
        choose_device_count(3, TWO_GPUS, installed_engine("jax"))
    with pytest.raises(CnnlabError, match=r"has 1 CPU device for .* \(CNNLAB_CPU_DEVICES=N splits the CPU"):
        choose_device_count(2, Devices("cpu", ("/device:CPU:0",)), installed_engine("tensorflow"))


def test_torch_refuses_several_devices():
    with pytest.raises(CnnlabError, match=r"^--devices 0: Keras's torch backend trains on one device; use "
                                          r"KERAS_BACKEND=jax or tensorflow for several$"):
        choose_device_count(0, TWO_GPUS, installed_engine("torch"))


def test_auto_precision_on_the_cpu_follows_its_bfloat16_flags(monkeypatch):
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(machine, "native_bfloat16", lambda native=native: native)
        assert placement_for(load_config("seed")).precision == expected


def test_placement_records_what_it_chose(monkeypatch):
    monkeypatch.setattr(machine, "native_bfloat16", lambda: True)
    placement = placement_for(load_config("seed"))
    assert placement.devices == 1 and placement.process_count == 1 and placement.is_chief
    assert placement.device_kind == "cpu" and len(placement.device_names) == 1
    assert placement.precision == "bfloat16" and placement.precision_reason == "this CPU computes bfloat16 natively"
    record = placement.record()
    assert record["devices"] == 1 and record["precision"] == "bfloat16" and record["device_kind"] == "cpu"
    assert record["precision_reason"] in placement.describe()
    assert record["threads"] == placement.threads and placement.threads in placement.describe()
    asked = placement_for(load_config("seed", {"train.precision": "float16"}))
    assert (asked.precision, asked.precision_reason) == ("float16", "asked for")
    with pytest.raises(CnnlabError, match="--devices 2: this machine has 1 CPU device"):
        placement_for(load_config("seed", {"train.devices": 2}))


NOISE = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795709159.518439   21674 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795709159.579667   21674 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795709164.565957   21674 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1
"""  # what TensorFlow 2.21 wrote on starting on this GPU-less machine, with TF_CPP_MIN_LOG_LEVEL unset; and JAX's
# CPU collectives (on stdout) when two processes joined


def test_start_up_noise_is_dropped_and_anything_else_kept():
    assert backends.start_up_problems(NOISE) == []
    real = "E0000 00:00:1.0 1 some_kernel.cc:1] a real failure"
    assert backends.start_up_problems(NOISE + real + "\n") == [real]
    # With a driver present, a failing cuInit is a real problem: kept.
    cuinit = NOISE.splitlines()[-2]
    assert backends.start_up_problems(cuinit) == [cuinit]


@pytest.mark.parametrize("value", ["0", "-2", "two", "257", "1.5"])
def test_cpu_devices_variable_is_checked(monkeypatch, value):
    monkeypatch.setenv("CNNLAB_CPU_DEVICES", value)
    with pytest.raises(CnnlabError, match=r"^CNNLAB_CPU_DEVICES must be a whole number between 1 and 256, got"):
        backends.cpu_devices_asked()


def test_cpu_devices_variable_defaults_to_one(monkeypatch):
    monkeypatch.delenv("CNNLAB_CPU_DEVICES", raising=False)
    assert backends.cpu_devices_asked() == 1
    monkeypatch.setenv("CNNLAB_CPU_DEVICES", "4")
    assert backends.cpu_devices_asked() == 4


def run_quietly(*args, env: dict) -> subprocess.CompletedProcess:
    """`python -m cnnlab ARGS` with TensorFlow's log level as a user has it: unset."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**environment, **env})


BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                        reason=f"{name} is not installed"))
    for name in ("tensorflow", "jax", "torch")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_devices_command_says_where_a_run_computes_and_nothing_else(backend):
    done = run_quietly("devices", env={"KERAS_BACKEND": backend})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # none of TensorFlow's start-up lines, though its log level is unset
    assert done.stdout.startswith(f"computing on 1 CPU device with Keras's {backend} backend, precision ")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_cpu_splits_into_devices_for_data_parallel_tries(backend):
    done = run_quietly("devices", "--devices", "all", env={"KERAS_BACKEND": backend, "CNNLAB_CPU_DEVICES": "2"})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"computing on 2 CPU devices with Keras's {backend} backend")


@pytest.mark.parametrize("env, said", [
    ({}, "threads: TensorFlow's, {cores} intra-op and {cores} inter-op, the fastest measured on a CPU "
         "(TF_NUM_INTRAOP_THREADS or TF_NUM_INTEROP_THREADS change them)"),
    ({"TF_NUM_INTEROP_THREADS": "3"}, "threads: inter-op 3 (TF_NUM_INTEROP_THREADS), as asked"),
])
def test_devices_says_which_thread_pools_tensorflow_computes_with(env, said):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TF_NUM_")}
    done = subprocess.run([sys.executable, "-m", "cnnlab", "devices"], capture_output=True, text=True, timeout=300,
                          env={**environment, "KERAS_BACKEND": "tensorflow", **env})
    assert done.returncode == 0, done.stderr
    assert "; " + said.format(cores=usable_cores()) + "; convolution gradients: " in done.stdout


def test_convolution_gradients_are_forward_convolutions_where_tensorflow_computes_float32_on_a_cpu(monkeypatch):
    for native, chosen, why in ((False, True, "forward convolutions, faster than TensorFlow's gradient kernels on CPUs "
                                              "in float32"),
                                (True, False, "TensorFlow's own, not measured slower on CPUs in bfloat16")):
        monkeypatch.setattr(machine, "native_bfloat16", lambda native=native: native)
        placement = placement_for(load_config("seed"))
        assert (placement.convolution_gradients, placement.convolution_gradients_reason) == (chosen, why)
        assert placement.record()["convolution_gradients"] == why and why in placement.describe()
    assert installed_engine("tensorflow").convolution_gradients("gpu", "float32")[0] is False
    for backend in ("jax", "torch"):
        assert installed_engine(backend).convolution_gradients("cpu", "float32") == \
            (False, f"the backend's own, not measured slower on {backend}")


@pytest.mark.parametrize("asked, chosen, why", [("convolutions", True, "forward convolutions, as asked"),
                                                ("backend", False, "the backend's own, as asked")])
def test_convolution_gradients_as_asked(monkeypatch, asked, chosen, why):
    monkeypatch.setattr(machine, "native_bfloat16", lambda: asked == "convolutions")  # the opposite of auto's choice
    placement = placement_for(load_config("seed", {"train.convolution_gradients": asked}))
    assert (placement.convolution_gradients, placement.convolution_gradients_reason) == (chosen, why)


def test_device_refusals_are_one_line():
    done = run_quietly("devices", "--devices", "3", env={"KERAS_BACKEND": "tensorflow", "CNNLAB_CPU_DEVICES": "2"})
    assert done.returncode == 1
    assert done.stderr == "cnnlab: error: --devices 3: this machine has 2 CPU devices for Keras's tensorflow backend " \
                          "(CNNLAB_CPU_DEVICES=N splits the CPU into N devices)\n"
    done = run_quietly("devices", "--devices", "two", env={})
    assert done.returncode == 2 and "expected a number of devices or 'all', got 'two'" in done.stderr


def test_whole_shards_split_each_batch_evenly_between_devices_and_processes():
    from cnnlab.backends.shards import WholeShards, whole_shards
    from cnnlab.data.batches import ShuffledBatches

    images, labels = np.arange(70).reshape(70, 1, 1, 1).astype("float32"), np.arange(70) % 3
    batches = lambda: ShuffledBatches(images, labels, 3, 32, seed=0)  # batches of 32, 32 and 6
    four = WholeShards(batches(), devices=4)
    assert len(four) == 3 and [len(four[index][0]) for index in range(3)] == [32, 32, 4]
    assert len(WholeShards(batches(), devices=8)) == 2  # a last batch of 6 cannot give 8 devices one image each
    parts = [WholeShards(batches(), devices=4, process_index=index, process_count=2) for index in range(2)]
    for index in range(3):
        first, second = parts[0][index][0], parts[1][index][0]
        whole = batches()[index][0]
        np.testing.assert_array_equal(np.concatenate([first, second]), whole[:len(whole) - len(whole) % 4])
    shard = WholeShards(batches(), devices=2)
    shard.on_epoch_end()
    assert shard.batches.epoch == 1  # the next epoch's order, as Keras asks of a PyDataset
    x, y = whole_shards(images[:9], labels[:9], 2)
    assert len(x) == len(y) == 8


@pytest.mark.skipif(__import__("keras").backend.backend() != "tensorflow", reason="stands in TensorFlow's devices")
def test_a_batch_size_that_does_not_split_between_the_devices_is_refused(monkeypatch):
    engine = engine_for("tensorflow")
    monkeypatch.setattr(engine, "detect_devices", lambda: Devices("cpu", ("/device:CPU:0", "/device:CPU:1")))
    monkeypatch.setattr(engine, "data_parallel", lambda names: None)
    with pytest.raises(CnnlabError, match=r"^--devices 2 needs a batch size that divides by 2, got 33$"):
        placement_for(load_config("seed", {"train.devices": 2, "train.batch_size": 33}))
    placement = placement_for(load_config("seed", {"train.devices": 0, "train.steps_per_execution": 8}))
    assert placement.devices == 2 and placement.compile_options(8)["steps_per_execution"] == 1


def test_one_process_needs_no_cluster_settings(monkeypatch):
    for variable in ("CNNLAB_COORDINATOR", "CNNLAB_PROCESSES", "CNNLAB_PROCESS_ID"):
        monkeypatch.delenv(variable, raising=False)
    assert backends.cluster_from() is None
    assert backends.cluster_from(processes=1, process_id=0) is None


def test_cluster_settings_come_from_flags_else_the_environment(monkeypatch):
    monkeypatch.setenv("CNNLAB_COORDINATOR", "head:1234")
    monkeypatch.setenv("CNNLAB_PROCESSES", "4")
    monkeypatch.setenv("CNNLAB_PROCESS_ID", "3")
    assert backends.cluster_from() == backends.Cluster("head:1234", 4, 3)
    assert backends.cluster_from("10.0.0.1:99", 2, 1) == backends.Cluster("10.0.0.1:99", 2, 1)


@pytest.mark.parametrize("flags, message", [
    (("127.0.0.1:1234", 2, None), "several processes need all of --coordinator HOST:PORT, --processes N and "
                                  "--process-id I"),
    (("127.0.0.1", 2, 0), "--coordinator must be HOST:PORT, got '127.0.0.1'"),
    (("host:port", 2, 0), "--coordinator must be HOST:PORT, got 'host:port'"),
    (("host:70000", 2, 0), "--coordinator must be HOST:PORT"),
    (("host:1", 0, 0), "--processes must be between 1 and 65,536, got 0"),
    (("host:1", 2, 2), r"--process-id must be between 0 and 1 \(--processes 2\), got 2"),
    (("host:1", 2, -1), "--process-id must be between 0 and 1"),
])
def test_bad_cluster_settings_are_refused_in_one_line(monkeypatch, flags, message):
    monkeypatch.delenv("CNNLAB_PROCESS_ID", raising=False)
    with pytest.raises(CnnlabError, match=f"^{message}"):
        backends.cluster_from(*flags)


def test_cluster_environment_must_hold_numbers(monkeypatch):
    monkeypatch.setenv("CNNLAB_PROCESSES", "two")
    with pytest.raises(CnnlabError, match="^CNNLAB_PROCESSES must be a whole number, got 'two'$"):
        backends.cluster_from()


def placement_of_process(index: int) -> backends.Placement:
    return backends.Placement(backend="jax", device_kind="cpu", devices=1, precision="float32",
                              precision_reason="asked for", process_index=index, process_count=2)


def test_the_chief_works_in_the_run_directory_itself(tmp_path):
    with placement_of_process(0).working_dir(tmp_path / "run") as where:
        assert where == tmp_path / "run"


def test_another_process_works_in_a_private_copy_that_goes_afterwards(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "checkpoints" / "state").write_text("epoch 3")
    (run_dir / ".lock").write_text("123")  # the chief's: never copied, so a worker cannot take it
    with placement_of_process(1).working_dir(run_dir, resume=True) as where:
        assert where != run_dir and where.name == "run"
        assert (where / "config.json").read_text() == "{}" and (where / "checkpoints" / "state").read_text() == "epoch 3"
        assert not (where / ".lock").exists()
        (where / "metrics.json").write_text("written by the worker")
    assert not where.exists()
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock", "checkpoints", "config.json"]
    # a fresh run: a path of its own, not yet made, whatever the chief has already written on a shared filesystem
    with placement_of_process(1).working_dir(run_dir) as where:
        assert not where.exists() and where.parent.is_dir() and where.name == "run"
    assert not where.parent.exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tiny_training_run_shows_none_of_tensorflows_start_up_noise(synthetic_archive, tmp_path, backend):
    # on JAX and PyTorch too: Keras imports TensorFlow there as well when it is installed, to seed it
    done = run_quietly("train", "--data", synthetic_archive, "--epochs", "1", "--train-limit", "200", "--val-size", "100",
                       *TINY_MODEL, "--out", tmp_path / "run", env={"KERAS_BACKEND": backend})
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines()
             if any(text in line for text in (*backends.START_UP_NOISE, backends.NO_DRIVER_CONSEQUENCE))]
    assert noise == []
