"""What cnnlab asks of a Keras backend: `Engine`, one subclass per backend, and the one way to reach the one in use.

Each subclass lives in the module named after its backend (backends/tensorflow.py, jax.py, torch.py), which imports
the backend's library; `engine_for` imports only the module of the backend asked for, when first asked, so cnnlab
runs on JAX or PyTorch without TensorFlow installed.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass

from cnnlab.common.errors import CnnlabError


@dataclass(frozen=True)
class Devices:
    """The devices a backend offers this process: its accelerators if it has any, else its CPU device(s)."""

    kind: str  # "cpu", "gpu" or "tpu"
    names: tuple[str, ...]
    compute_capability: tuple[int, int] | None = None  # NVIDIA GPUs: the lowest among them


class Engine(abc.ABC):
    """A Keras backend as cnnlab drives it. The defaults are those of a backend that trains on one device in one
    process, with XLA left to Keras and `fit` reading Keras's PyDataset; a subclass overrides what its backend does
    otherwise."""

    name: str  # Keras's name for the backend: "tensorflow", "jax" or "torch"

    @abc.abstractmethod
    def detect_devices(self) -> Devices:
        """The devices the backend offers this process."""

    def split_host_cpu(self, count: int) -> None:
        """Make the CPU `count` devices, once the backend is imported and before it starts them. Nothing by default:
        one device needs no split, and JAX splits at its import, as XLA_FLAGS says (`startup.import_keras`)."""

    def thread_pools(self) -> str:
        """The backend's CPU thread pools, in words: its own, untouched."""
        return "threads: the backend's own"

    def initialize(self, coordinator: str, processes: int, process_id: int) -> None:
        """Join the run's other processes before the backend starts its devices; refused in one line here."""
        raise CnnlabError(f"several processes: Keras's {self.name} backend trains in one process; use "
                          "KERAS_BACKEND=jax")

    def processes(self) -> tuple[int, int]:
        """This process's index among the processes of the run, and their count."""
        return 0, 1

    def refuse_devices(self, requested: int, used: int) -> None:
        """Refuse, in one line, to train on `used` devices (what --devices `requested` came to) where the backend
        cannot: here, more than one."""
        if used > 1:
            raise CnnlabError(f"--devices {requested}: Keras's {self.name} backend trains on one device; use "
                              "KERAS_BACKEND=jax or tensorflow for several")

    def global_device_names(self, per_process: int) -> tuple[str, ...]:
        """The first `per_process` devices of every process of the run: in one process, this one's."""
        return self.detect_devices().names[:per_process]

    def data_parallel(self, device_names: tuple[str, ...]):
        """The scope (a context factory) in which Keras builds, compiles and fits models across `device_names`.
        Only a backend whose `refuse_devices` lets several devices through is asked."""
        raise NotImplementedError(f"Keras's {self.name} backend trains on one device")

    def distributed_devices(self) -> int:
        """The devices the distribution in force splits each batch over."""
        return 1

    def fit_input(self, batches) -> tuple[object, list]:
        """What `fit` reads for `batches` (a Keras PyDataset), and the callbacks that must go with it."""
        return batches, []

    def jit_compile(self, device_kind: str) -> bool | str:
        """`model.compile`'s jit_compile on `device_kind`: left to Keras."""
        return "auto"

    def steps_per_execution_limit(self, devices: int) -> int | None:
        """The most training steps one call may run on `devices` devices: no limit."""
        return None

    def fused(self, optimizer):
        """`optimizer` (a Keras optimizer), stepping through the backend's fused kernels where it has them: as it is."""
        return optimizer

    def convolution_gradients(self, device_kind: str, precision: str) -> tuple[bool, str]:
        """Whether cnnlab's networks compute convolution gradients by forward convolutions (models/convolution.py)
        on `device_kind` in `precision`, and why: not where nobody measured it faster."""
        return False, f"the backend's own, not measured slower on {self.name}"


def engine_for(backend: str) -> Engine:
    """The engine of Keras's backend named `backend`; its module is imported now, and imports the backend itself."""
    return importlib.import_module(f"cnnlab.backends.{backend}").ENGINE


def current_engine() -> Engine:
    """The engine of the backend this process's Keras uses."""
    import keras

    return engine_for(keras.backend.backend())


def detect_devices() -> Devices:
    """The devices the backend this process's Keras uses offers it."""
    return current_engine().detect_devices()
