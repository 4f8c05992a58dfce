"""Starting the backend quietly: Keras imported, the host CPU split, the run's processes joined, and the backend's
start-up noise held back."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile

from cnnlab.backends.cluster import Cluster
from cnnlab.backends.engine import engine_for
from cnnlab.common.errors import CnnlabError, install_hint

CPU_DEVICES_VARIABLE = "CNNLAB_CPU_DEVICES"
MAX_CPU_DEVICES = 256

# What TensorFlow writes to stderr on every start on a machine without a CUDA driver, whatever TF_CPP_MIN_LOG_LEVEL
# says (absl logs before its own set-up, so the level is not read yet): notices, not problems.
START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine, GPU will not be used.",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags.",
    "oneDNN custom operations are on.",
    # JAX's CPU collectives (several processes), on stdout, once every process has joined
    "peer ranks. Expected number of connected peer ranks is",
)
# TensorFlow asks the CUDA driver for GPUs even where it found none; that call then fails with an ERROR line. It is
# noise only when the driver is missing (the line above was written): with a driver it is a real failure, and shown.
NO_DRIVER = "Could not find cuda drivers on your machine"
NO_DRIVER_CONSEQUENCE = "failed call to cuInit"

# The module a Keras backend needs -> the cnnlab extra that installs it.
BACKEND_EXTRAS = {"tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax", "torch": "torch"}


def start_up_problems(text: str) -> list[str]:
    """The lines of what the backend wrote while starting that are not known noise."""
    lines = text.splitlines()
    no_driver = any(NO_DRIVER in line for line in lines)
    return [line for line in lines if line.strip() and not any(noise in line for noise in START_UP_NOISE)
            and not (no_driver and NO_DRIVER_CONSEQUENCE in line)]


def cpu_devices_asked() -> int:
    """$CNNLAB_CPU_DEVICES as a device count; 1 (the CPU as one device) when unset."""
    text = os.environ.get(CPU_DEVICES_VARIABLE, "").strip()
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_CPU_DEVICES:
        raise CnnlabError(f"{CPU_DEVICES_VARIABLE} must be a whole number between 1 and {MAX_CPU_DEVICES}, "
                          f"got {text[:20]!r}")
    return int(text)


def import_keras(cluster: Cluster | None = None) -> None:
    """Import Keras and start its backend's devices, quietly: call before anything else imports Keras.

    Splits the CPU as $CNNLAB_CPU_DEVICES asks (JAX reads XLA_FLAGS at its import, TensorFlow its device list before
    its first operation), then imports Keras and lists the backend's devices with file descriptors 1 and 2 held in
    temporary files: the backend's C++ libraries write there before any setting can quieten them. What they wrote is
    then shown where it was going, less the known noise (`start_up_problems`); with CNNLAB_DEBUG set, all of it, as it
    comes. With a `cluster`, this process joins the run's other processes first (JAX only).
    """
    cpu_devices = cpu_devices_asked()
    if cpu_devices > 1 and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} " \
                                  f"--xla_force_host_platform_device_count={cpu_devices}".strip()
    if "keras" in sys.modules or os.environ.get("CNNLAB_DEBUG"):
        _start_backend(cpu_devices, cluster)
        return
    with _held_output():
        _start_backend(cpu_devices, cluster)


@contextlib.contextmanager
def _held_output():
    """Standard output and error into temporary files; afterwards, what is not noise goes where it was going."""
    streams = {1: sys.stdout, 2: sys.stderr}
    held = {}
    for descriptor, stream in streams.items():
        stream.flush()
        held[descriptor] = (os.dup(descriptor), tempfile.TemporaryFile())
        os.dup2(held[descriptor][1].fileno(), descriptor)
    try:
        yield
    finally:
        for descriptor, (saved, file) in held.items():
            streams[descriptor].flush()  # Python's own writes in the meantime land in the file, in order
            os.dup2(saved, descriptor)
            os.close(saved)
            with file:
                file.seek(0)
                problems = start_up_problems(file.read().decode("utf-8", "replace"))
            for line in problems:
                print(line, file=streams[descriptor])


def _start_backend(cpu_devices: int, cluster: Cluster | None) -> None:
    keras = _keras()
    if importlib.util.find_spec("tensorflow") is not None:
        # Keras imports TensorFlow on any backend where it is installed (keras.utils.set_random_seed seeds it too; on
        # TensorFlow's own it is imported already): here, its start-up noise is held back with the rest, instead of
        # arriving in the middle of a run.
        import tensorflow  # noqa: F401
    engine = engine_for(keras.backend.backend())
    engine.split_host_cpu(cpu_devices)
    if cluster is not None and cluster.processes > 1:
        engine.initialize(cluster.coordinator, cluster.processes, cluster.process_id)
    engine.detect_devices()


def _keras():
    """Keras, imported; refused in one line where the module its backend needs is missing."""
    try:
        import keras
    except ModuleNotFoundError as exc:  # Keras imports its backend at once; TensorFlow unless told otherwise
        if exc.name not in BACKEND_EXTRAS:
            raise
        raise CnnlabError(f"Keras's backend needs {exc.name}, which is not installed: "
                          f"{install_hint(BACKEND_EXTRAS[exc.name])}, or choose an installed backend with "
                          "KERAS_BACKEND=tensorflow|jax|torch") from None
    return keras
