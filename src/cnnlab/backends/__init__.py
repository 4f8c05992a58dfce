"""Where a run computes: the Keras backend, its devices, the precision and the distribution scope.

This package is the only part of cnnlab that knows which Keras backend is in use. `placement_for(config)` answers,
once per process, everything the rest needs: which devices and how many, the precision "auto" resolves to and why,
the compile options the backend wants, and `scope()`, inside which every model of a run is built and compiled (a
`tf.distribute` strategy on TensorFlow, a `keras.distribution` on JAX, nothing on one device). Backend-only code
lives in the module named after its backend (`backends/tensorflow.py`: tf.data, tf.distribute; `backends/jax.py`;
`backends/torch.py`), imported only when that backend is the one in use, so cnnlab runs without TensorFlow installed
on JAX or PyTorch.

Environment:
    CNNLAB_CPU_DEVICES=N   split this machine's CPU into N logical devices (TensorFlow) or N host devices (JAX), so
                           that data-parallel training (`--devices N`) can be tried and tested without GPUs. Read once,
                           by `import_keras`, before the backend initialises its devices.
    CNNLAB_COORDINATOR=HOST:PORT, CNNLAB_PROCESSES=N, CNNLAB_PROCESS_ID=I
                           one run over N processes (machines), on JAX: what the flags --coordinator, --processes and
                           --process-id say, for launchers that set the environment (see `cluster_from`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.common.errors import CnnlabError

CPU_DEVICES_VARIABLE = "CNNLAB_CPU_DEVICES"
MAX_CPU_DEVICES = 256


@dataclass(frozen=True)
class Placement:
    backend: str  # "tensorflow", "jax" or "torch"
    device_kind: str  # "cpu", "gpu" or "tpu"
    devices: int  # devices that share each batch (data-parallel); 1 for one device
    precision: str  # what build_model uses: "float32", "bfloat16" (mixed) or "float16" (mixed, loss-scaled)
    precision_reason: str  # why, in words, for metrics.json and the start-up line
    device_names: tuple[str, ...] = ()
    process_index: int = 0  # many machines: this process's index; 0 is the chief, which alone writes the run
    process_count: int = 1
    jit_compile: bool | str = "auto"  # "auto" leaves it to Keras; False where measured slower
    steps_per_execution_limit: int | None = None  # PyTorch runs one step per call
    _scope: object = field(default=None, repr=False, compare=False)

    @property
    def is_chief(self) -> bool:
        return self.process_index == 0

    def scope(self):
        """The context every model of the run is built, compiled and trained in."""
        return self._scope() if self._scope is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def working_dir(self, run_dir: Path, resume: bool = False):
        """Where this process writes the run: the chief (process 0) `run_dir` itself; any other process a private
        scratch path, removed afterwards, so that one run directory is written by one process while every process
        runs the same code. Resuming, the scratch path is a copy of `run_dir` (config, resume state: what a worker
        must read); for a fresh run it does not exist yet, whatever the chief has already made of `run_dir` on a
        shared filesystem."""
        if self.is_chief:
            yield Path(run_dir)
            return
        scratch = Path(tempfile.mkdtemp(prefix=f"cnnlab-process-{self.process_index}-"))
        try:
            copy = scratch / Path(run_dir).name
            if resume:
                shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock", ".tmp-*"))
            yield copy
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def compile_options(self, steps_per_execution: int) -> dict[str, object]:
        """Keyword arguments for `model.compile` that depend on the backend and device."""
        if self.steps_per_execution_limit is not None:
            steps_per_execution = min(steps_per_execution, self.steps_per_execution_limit)
        return {"jit_compile": self.jit_compile, "steps_per_execution": steps_per_execution}

    def record(self) -> dict[str, object]:
        """What metrics.json keeps of where the run computed."""
        return {"backend": self.backend, "device_kind": self.device_kind, "devices": self.devices,
                "device_names": list(self.device_names), "processes": self.process_count,
                "precision": self.precision, "precision_reason": self.precision_reason}

    def describe(self) -> str:
        """One line for the terminal: where and in which precision this run computes."""
        where = f"{self.devices} {self.device_kind.upper()} device{'s' if self.devices > 1 else ''}"
        if self.process_count > 1:
            where += f" in each of {self.process_count} processes"
        return f"computing on {where} with Keras's {self.backend} backend, precision {self.precision} " \
               f"({self.precision_reason})"


@dataclass(frozen=True)
class Devices:
    """The devices a backend offers this process: its accelerators if it has any, else its CPU device(s)."""

    kind: str  # "cpu", "gpu" or "tpu"
    names: tuple[str, ...]
    compute_capability: tuple[int, int] | None = None  # NVIDIA GPUs: the lowest among them


# Tensor cores: bfloat16 from Ampere (8.0), float16 from Volta (7.0); below that, half precision is emulated or slow.
BFLOAT16_GPU = (8, 0)
FLOAT16_GPU = (7, 0)


def choose_precision(requested: str, device_kind: str, compute_capability: tuple[int, int] | None = None,
                     cpu_bfloat16: bool = False) -> tuple[str, str]:
    """The precision a run computes in, and why: "auto" chosen for the device, anything else as asked."""
    if requested != "auto":
        return requested, "asked for"
    if device_kind == "tpu":
        return "bfloat16", "TPUs compute bfloat16 natively"
    if device_kind == "gpu":
        if compute_capability is None:
            return "float32", "GPU of unknown compute capability"
        capability = ".".join(map(str, compute_capability))
        if compute_capability >= BFLOAT16_GPU:
            return "bfloat16", f"GPU of compute capability {capability} computes bfloat16 natively"
        if compute_capability >= FLOAT16_GPU:
            return "float16", f"GPU of compute capability {capability}: float16 tensor cores, no bfloat16; " \
                              "loss-scaled"
        return "float32", f"GPU of compute capability {capability} has no fast half precision"
    if cpu_bfloat16:
        return "bfloat16", "this CPU computes bfloat16 natively"
    return "float32", "no native bfloat16 on this CPU"


def choose_jit_compile(backend: str, device_kind: str) -> bool | str:
    """XLA compilation: left to Keras, except where it was measured slower (TensorFlow on CPU)."""
    # TensorFlow's own CPU kernels beat XLA's there (benchmarks/RESULTS.md)
    return False if backend == "tensorflow" and device_kind == "cpu" else "auto"


def choose_device_count(requested: int, devices: Devices, backend: str) -> int:
    """How many of `devices` train: `requested`, or all of them for 0; refused in one line where impossible."""
    available = len(devices.names)
    used = available if requested == 0 else requested
    if used > 1 and backend == "torch":
        raise CnnlabError(f"--devices {requested}: Keras's torch backend trains on one device; use "
                          "KERAS_BACKEND=jax or tensorflow for several")
    if used > available:
        hint = f" ({CPU_DEVICES_VARIABLE}=N splits the CPU into N devices)" if devices.kind == "cpu" else ""
        raise CnnlabError(f"--devices {requested}: this machine has {available} {devices.kind.upper()} "
                          f"device{'s' if available > 1 else ''} for Keras's {backend} backend{hint}")
    return used


def placement_for(config) -> Placement:
    """The placement of a run configured by `config` (a RunConfig), in the backend this process uses."""
    import keras

    from cnnlab.backends import machine

    backend = keras.backend.backend()
    if config.train.tensorboard and importlib.util.find_spec("tensorflow") is None:
        # Keras's TensorBoard callback writes its logs through tf.summary on every backend
        raise CnnlabError("--tensorboard writes its logs with TensorFlow, which is not installed: pip install "
                          "'cnnlab[tensorflow]'")
    engine = _engine(backend)
    devices = engine.detect_devices()
    used = choose_device_count(config.train.devices, devices, backend)
    precision, reason = choose_precision(config.train.precision, devices.kind, devices.compute_capability,
                                         devices.kind == "cpu" and machine.native_bfloat16())
    process_index, process_count = engine.processes() if hasattr(engine, "processes") else (0, 1)
    total = used * process_count
    if config.train.batch_size % total:  # each batch is split into equal parts, one per device (backends/shards.py)
        where = f"{used} devices in each of {process_count} processes" if process_count > 1 else f"--devices {used}"
        raise CnnlabError(f"{where} needs a batch size that divides by {total}, got {config.train.batch_size}")
    names = engine.global_device_names(used) if process_count > 1 else devices.names[:used]
    return Placement(
        backend=backend, device_kind=devices.kind, devices=used, precision=precision, precision_reason=reason,
        device_names=devices.names[:used], process_index=process_index, process_count=process_count,
        jit_compile=choose_jit_compile(backend, devices.kind),
        # PyTorch runs one step per call; so does TensorFlow over several devices, where Keras 3.15's multi-step
        # loop under MirroredStrategy fails ("You must feed a value for placeholder tensor ... while/cond")
        steps_per_execution_limit=1 if backend == "torch" or (backend == "tensorflow" and used > 1) else None,
        _scope=engine.data_parallel(names) if total > 1 else None,
    )


def detect_devices() -> Devices:
    """The devices the active Keras backend offers this process."""
    import keras

    return _engine(keras.backend.backend()).detect_devices()


def _engine(backend: str):
    """The module of cnnlab that speaks to `backend` (imported only now: it imports the backend itself)."""
    return importlib.import_module(f"cnnlab.backends.{backend}")


def fit_input(batches) -> tuple[object, list]:
    """What `fit` reads for a `data.batches.ShuffledBatches`, and the callbacks that must go with it. Call it, and
    `fit`, inside the placement's scope: over several devices, batches are cut into whole shards (backends/shards.py).

    On TensorFlow a tf.data pipeline serves the same batches, each prepared while the model trains on the one before:
    Keras's own PyDataset adapter halved training speed at batch 32 on a 2-core CPU (see benchmarks/RESULTS.md).
    Elsewhere `fit` reads the PyDataset itself.
    """
    import keras

    backend = keras.backend.backend()
    devices = _distributed_devices(backend)
    if devices > 1:
        from cnnlab.backends.shards import WholeShards

        engine = _engine(backend)
        batches = WholeShards(batches, devices, *(engine.processes() if hasattr(engine, "processes") else (0, 1)))
    if backend != "tensorflow":
        return batches, []
    from cnnlab.backends.tensorflow import prefetched_batches

    next_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: batches.on_epoch_end())
    return prefetched_batches(batches), [next_epoch]


def validation_input(x, y) -> tuple[object, object]:
    """The validation images and labels `fit` evaluates on, called inside the placement's scope: all of them on one
    device; over several, the last len(x) % devices are left out (backends/shards.py)."""
    import keras

    devices = _distributed_devices(keras.backend.backend())
    if devices == 1:
        return x, y
    from cnnlab.backends.shards import whole_shards

    return whole_shards(x, y, devices)


def _distributed_devices(backend: str) -> int:
    """The devices the distribution in force (the placement's scope) splits each batch over."""
    engine = _engine(backend)
    return engine.distributed_devices() if hasattr(engine, "distributed_devices") else 1


# ---- many processes ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cluster:
    """The processes of one run: where process 0 listens, how many there are, and which one this is."""

    coordinator: str  # HOST:PORT of process 0
    processes: int
    process_id: int


MAX_PROCESSES = 65_536
# Tried with two workers on 127.0.0.1 (TensorFlow 2.21, Keras 3.15.1): MultiWorkerMirroredStrategy starts, with 2
# replicas in sync, but Keras's `fit` fails under it: "ValueError: Attempt to convert a value (PerReplica:{...}) with
# an unsupported type (<class '...PerReplica'>) to a Tensor" (keras-team/keras#20585).
MULTI_PROCESS_REFUSALS = {
    "tensorflow": "several processes: Keras 3 cannot fit under TensorFlow's MultiWorkerMirroredStrategy "
                  "(keras-team/keras#20585); use KERAS_BACKEND=jax",
    "torch": "several processes: Keras's torch backend trains in one process; use KERAS_BACKEND=jax",
}


def cluster_from(coordinator: str | None = None, processes: int | None = None,
                 process_id: int | None = None) -> Cluster | None:
    """The run's processes as flags (else CNNLAB_COORDINATOR, CNNLAB_PROCESSES, CNNLAB_PROCESS_ID) say; None for
    one process. Checked here, in one line, before any backend starts."""
    coordinator = coordinator or os.environ.get("CNNLAB_COORDINATOR") or None
    processes = processes if processes is not None else _whole_number("CNNLAB_PROCESSES")
    process_id = process_id if process_id is not None else _whole_number("CNNLAB_PROCESS_ID")
    if coordinator is None and processes in (None, 1) and process_id in (None, 0):
        return None
    if coordinator is None or processes is None or process_id is None:
        raise CnnlabError("several processes need all of --coordinator HOST:PORT, --processes N and --process-id I "
                          "(or CNNLAB_COORDINATOR, CNNLAB_PROCESSES, CNNLAB_PROCESS_ID)")
    host, colon, port = coordinator.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise CnnlabError(f"--coordinator must be HOST:PORT, got {coordinator[:80]!r}")
    if not 1 <= processes <= MAX_PROCESSES:
        raise CnnlabError(f"--processes must be between 1 and {MAX_PROCESSES:,}, got {processes}")
    if not 0 <= process_id < processes:
        raise CnnlabError(f"--process-id must be between 0 and {processes - 1} (--processes {processes}), "
                          f"got {process_id}")
    return Cluster(coordinator, processes, process_id)


def _whole_number(variable: str) -> int | None:
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise CnnlabError(f"{variable} must be a whole number, got {text[:20]!r}")
    return int(text)


# ---- start-up: splitting the host CPU, and TensorFlow's start-up noise -------------------------------------------

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


# The module a Keras backend needs -> the cnnlab extra that installs it.
BACKEND_EXTRAS = {"tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax", "torch": "torch"}


def _start_backend(cpu_devices: int, cluster: Cluster | None) -> None:
    try:
        import keras
    except ModuleNotFoundError as exc:  # Keras imports its backend at once; TensorFlow unless told otherwise
        if exc.name not in BACKEND_EXTRAS:
            raise
        raise CnnlabError(f"Keras's backend needs {exc.name}, which is not installed: pip install "
                          f"'cnnlab[{BACKEND_EXTRAS[exc.name]}]', or choose an installed backend with "
                          "KERAS_BACKEND=tensorflow|jax|torch") from None

    backend = keras.backend.backend()
    if backend != "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
        # Keras imports TensorFlow on any backend where it is installed (keras.utils.set_random_seed seeds it too):
        # here, its start-up noise is held back with the rest, instead of arriving in the middle of a run.
        import tensorflow  # noqa: F401
    engine = _engine(backend)
    if hasattr(engine, "split_host_cpu"):
        engine.split_host_cpu(cpu_devices)
    if cluster is not None and cluster.processes > 1:
        if not hasattr(engine, "initialize"):
            raise CnnlabError(MULTI_PROCESS_REFUSALS[backend])
        engine.initialize(cluster.coordinator, cluster.processes, cluster.process_id)
    engine.detect_devices()
