"""Where a run computes: its devices, its precision and why, its compile options and its distribution scope."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.backends import machine
from cnnlab.backends.engine import Devices, Engine, current_engine
from cnnlab.backends.startup import CPU_DEVICES_VARIABLE
from cnnlab.common.errors import CnnlabError, install_hint


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
    threads: str = ""  # the backend's CPU thread pools, in words (Engine.thread_pools)
    # cnnlab's networks' convolution gradients by forward convolutions (models/convolution.py), and why
    convolution_gradients: bool = False
    convolution_gradients_reason: str = ""
    steps_per_execution_limit: int | None = None  # the most steps one call runs, where the backend caps it
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
                "precision": self.precision, "precision_reason": self.precision_reason, "threads": self.threads,
                "convolution_gradients": self.convolution_gradients_reason}

    def describe(self) -> str:
        """One line for the terminal: where and in which precision this run computes."""
        where = f"{self.devices} {self.device_kind.upper()} device{'s' if self.devices > 1 else ''}"
        if self.process_count > 1:
            where += f" in each of {self.process_count} processes"
        return f"computing on {where} with Keras's {self.backend} backend, precision {self.precision} " \
               f"({self.precision_reason}); {self.threads}; convolution gradients: " \
               f"{self.convolution_gradients_reason}"


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


def choose_convolution_gradients(requested: str, engine: Engine, device_kind: str,
                                 precision: str) -> tuple[bool, str]:
    """Whether convolution gradients are computed by forward convolutions, and why: "auto" as `engine` chooses for
    the device and precision, anything else as asked."""
    if requested == "auto":
        return engine.convolution_gradients(device_kind, precision)
    by_convolution = requested == "convolutions"
    return by_convolution, ("forward convolutions" if by_convolution else "the backend's own") + ", as asked"


def choose_device_count(requested: int, devices: Devices, engine: Engine) -> int:
    """How many of `devices` train on `engine`'s backend: `requested`, or all of them for 0; refused in one line
    where impossible."""
    available = len(devices.names)
    used = available if requested == 0 else requested
    engine.refuse_devices(requested, used)
    if used > available:
        hint = f" ({CPU_DEVICES_VARIABLE}=N splits the CPU into N devices)" if devices.kind == "cpu" else ""
        raise CnnlabError(f"--devices {requested}: this machine has {available} {devices.kind.upper()} "
                          f"device{'s' if available > 1 else ''} for Keras's {engine.name} backend{hint}")
    return used


def placement_for(config) -> Placement:
    """The placement of a run configured by `config` (a RunConfig), in the backend this process uses."""
    if config.train.tensorboard and importlib.util.find_spec("tensorflow") is None:
        # Keras's TensorBoard callback writes its logs through tf.summary on every backend
        raise CnnlabError("--tensorboard writes its logs with TensorFlow, which is not installed: "
                          + install_hint("tensorflow"))
    engine = current_engine()
    devices = engine.detect_devices()
    used = choose_device_count(config.train.devices, devices, engine)
    precision, reason = choose_precision(config.train.precision, devices.kind, devices.compute_capability,
                                         devices.kind == "cpu" and machine.native_bfloat16())
    by_convolution, why = choose_convolution_gradients(config.train.convolution_gradients, engine, devices.kind,
                                                       precision)
    process_index, process_count = engine.processes()
    _check_batch_size(config.train.batch_size, used, process_count)
    names = engine.global_device_names(used) if process_count > 1 else devices.names[:used]
    return Placement(
        backend=engine.name, device_kind=devices.kind, devices=used, precision=precision, precision_reason=reason,
        device_names=devices.names[:used], process_index=process_index, process_count=process_count,
        jit_compile=engine.jit_compile(devices.kind), threads=engine.thread_pools(),
        convolution_gradients=by_convolution, convolution_gradients_reason=why,
        steps_per_execution_limit=engine.steps_per_execution_limit(used),
        _scope=engine.data_parallel(names) if used * process_count > 1 else None,
    )


def _check_batch_size(batch_size: int, used: int, process_count: int) -> None:
    """Each batch is split into equal parts, one per device of every process (backends/shards.py)."""
    total = used * process_count
    if batch_size % total:
        where = f"{used} devices in each of {process_count} processes" if process_count > 1 else f"--devices {used}"
        raise CnnlabError(f"{where} needs a batch size that divides by {total}, got {batch_size}")
