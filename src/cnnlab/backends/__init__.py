"""Where a run computes: the Keras backend, its devices, the precision and the distribution scope.

This package is the only part of cnnlab that knows which Keras backend is in use. `placement_for(config)` answers,
once per process, everything the rest needs: which devices and how many, the precision "auto" resolves to and why,
the compile options the backend wants, and `scope()`, inside which every model of a run is built and compiled (a
`tf.distribute` strategy on TensorFlow, a `keras.distribution` on JAX, nothing on one device). Backend-only code
lives in the module named after its backend (`backends/tensorflow.py`: tf.data, tf.distribute), imported only when
that backend is the one in use, so cnnlab runs without TensorFlow installed on JAX or PyTorch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Placement:
    backend: str  # "tensorflow", "jax" or "torch"
    device_kind: str  # "cpu" or "gpu"
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


def placement_for(config) -> Placement:
    """The placement of a run configured by `config` (a RunConfig), in the backend this process uses."""
    import keras

    from cnnlab import system_info

    backend = keras.backend.backend()
    requested = config.train.precision
    if requested != "auto":
        precision, reason = requested, "asked for"
    elif system_info.native_bfloat16():
        precision, reason = "bfloat16", "this CPU computes bfloat16 natively"
    else:
        precision, reason = "float32", "no native bfloat16 on this CPU"
    return Placement(
        backend=backend, device_kind="cpu", devices=1, precision=precision, precision_reason=reason,
        # XLA was measured slower than TensorFlow's own kernels on CPUs (benchmarks/RESULTS.md)
        jit_compile=False if backend == "tensorflow" else "auto",
        steps_per_execution_limit=1 if backend == "torch" else None,
    )


def fit_input(batches) -> tuple[object, list]:
    """What `fit` reads for a `data.batches.ShuffledBatches`, and the callbacks that must go with it.

    On TensorFlow a tf.data pipeline serves the same batches, each prepared while the model trains on the one before:
    Keras's own PyDataset adapter halved training speed at batch 32 on a 2-core CPU (see benchmarks/RESULTS.md).
    Elsewhere `fit` reads the PyDataset itself.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return batches, []
    from cnnlab.backends.tensorflow import prefetched_batches

    next_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: batches.on_epoch_end())
    return prefetched_batches(batches), [next_epoch]
