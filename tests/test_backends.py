"""Where a run computes: device choice, precision "auto" per device, jit, start-up noise, and `cnnlab devices`.

The choices are pure functions of the backend, the device kind, its compute capability and the CPU's flags, so every
GPU case is tested here without a GPU. The start-up checks run `python -m cnnlab` in fresh processes, as a user
does; data-parallel training itself is in test_backends_distributed.py.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from cnnlab import backends, system_info
from cnnlab.backends import Devices, choose_device_count, choose_jit_compile, choose_precision, placement_for
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError


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


def test_jit_compile_is_left_to_keras_except_tensorflow_on_cpu():
    assert choose_jit_compile("tensorflow", "cpu") is False
    for backend, device_kind in (("tensorflow", "gpu"), ("jax", "cpu"), ("jax", "gpu"), ("torch", "cpu")):
        assert choose_jit_compile(backend, device_kind) == "auto"


TWO_GPUS = Devices("gpu", ("/device:GPU:0", "/device:GPU:1"), (8, 0))


def test_device_count_is_the_one_asked_for_or_all():
    assert choose_device_count(1, TWO_GPUS, "tensorflow") == 1
    assert choose_device_count(2, TWO_GPUS, "jax") == 2
    assert choose_device_count(0, TWO_GPUS, "tensorflow") == 2
    assert choose_device_count(0, Devices("cpu", ("cpu:0",)), "torch") == 1  # all of one is one, on any backend


def test_more_devices_than_there_are_is_refused_in_one_line():
    with pytest.raises(CnnlabError, match=r"^--devices 3: this machine has 2 GPU devices for Keras's jax backend$"):
        choose_device_count(3, TWO_GPUS, "jax")
    with pytest.raises(CnnlabError, match=r"has 1 CPU device for .* \(CNNLAB_CPU_DEVICES=N splits the CPU"):
        choose_device_count(2, Devices("cpu", ("/device:CPU:0",)), "tensorflow")


def test_torch_refuses_several_devices():
    with pytest.raises(CnnlabError, match=r"^--devices 0: Keras's torch backend trains on one device; use "
                                          r"KERAS_BACKEND=jax or tensorflow for several$"):
        choose_device_count(0, TWO_GPUS, "torch")


def test_placement_records_what_it_chose(monkeypatch):
    monkeypatch.setattr(system_info, "native_bfloat16", lambda: True)
    placement = placement_for(load_config("seed"))
    assert placement.devices == 1 and placement.process_count == 1 and placement.is_chief
    assert placement.device_kind == "cpu" and len(placement.device_names) == 1
    assert placement.precision == "bfloat16" and placement.precision_reason == "this CPU computes bfloat16 natively"
    record = placement.record()
    assert record["devices"] == 1 and record["precision"] == "bfloat16" and record["device_kind"] == "cpu"
    assert record["precision_reason"] in placement.describe()
    asked = placement_for(load_config("seed", {"train.precision": "float16"}))
    assert (asked.precision, asked.precision_reason) == ("float16", "asked for")
    with pytest.raises(CnnlabError, match="--devices 2: this machine has 1 CPU device"):
        placement_for(load_config("seed", {"train.devices": 2}))


NOISE = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795709159.518439   21674 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795709159.579667   21674 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795709164.565957   21674 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""  # what TensorFlow 2.21 wrote on starting on this GPU-less machine, with TF_CPP_MIN_LOG_LEVEL unset


def test_start_up_noise_is_dropped_and_anything_else_kept():
    assert backends.start_up_problems(NOISE) == []
    real = "E0000 00:00:1.0 1 some_kernel.cc:1] a real failure"
    assert backends.start_up_problems(NOISE + real + "\n") == [real]
    # With a driver present, a failing cuInit is a real problem: kept.
    cuinit = NOISE.splitlines()[-1]
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


@pytest.mark.slow
def test_device_refusals_are_one_line():
    done = run_quietly("devices", "--devices", "3", env={"KERAS_BACKEND": "tensorflow", "CNNLAB_CPU_DEVICES": "2"})
    assert done.returncode == 1
    assert done.stderr == "cnnlab: error: --devices 3: this machine has 2 CPU devices for Keras's tensorflow backend " \
                          "(CNNLAB_CPU_DEVICES=N splits the CPU into N devices)\n"
    done = run_quietly("devices", "--devices", "two", env={})
    assert done.returncode == 2 and "expected a number of devices or 'all', got 'two'" in done.stderr
