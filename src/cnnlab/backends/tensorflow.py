"""The TensorFlow engine: its devices, data parallelism through `tf.distribute.MirroredStrategy`, and a tf.data
pipeline that feeds training batches ahead of the model.

Everything else in cnnlab runs on any Keras backend; on JAX or PyTorch, `fit` reads the same batches through Keras's
PyDataset instead (`Engine.fit_input`).
"""

from __future__ import annotations

import functools
import os

import keras
import tensorflow as tf

from cnnlab.backends.engine import Devices, Engine
from cnnlab.common.cores import usable_cores
from cnnlab.common.errors import CnnlabError

PREFETCH_BATCHES = 8
THREAD_VARIABLES = {"intra-op": "TF_NUM_INTRAOP_THREADS", "inter-op": "TF_NUM_INTEROP_THREADS"}  # TensorFlow's own


class TensorFlowEngine(Engine):
    name = "tensorflow"

    def split_host_cpu(self, count: int) -> None:
        """Make the CPU `count` logical devices, as several GPUs would be; must come before TensorFlow's first
        operation."""
        cpu = tf.config.list_physical_devices("CPU")[0]
        if count == len(tf.config.get_logical_device_configuration(cpu) or [None]):
            return
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:  # TensorFlow had already started its devices
            raise CnnlabError(f"cannot split the CPU into {count} devices: TensorFlow already started") from None

    def thread_pools(self) -> str:
        """TensorFlow's CPU thread pools as they will be: one thread per core in each of its intra-op and inter-op
        pools, or what its variables say. Left at that on purpose: of the settings `benchmarks/cpu_settings.py` tried
        on a 2-core Xeon and a 2-core AVX2 EPYC (benchmarks/RESULTS.md), one inter-op thread, one intra-op thread,
        oneDNN off or its other switches, and XLA on trained no faster than these defaults beyond the machine's
        drift (about 10%), and the JAX and PyTorch
        backends slower than TensorFlow."""
        asked = [f"{name} {os.environ[variable].strip()} ({variable})" for name, variable in THREAD_VARIABLES.items()
                 if os.environ.get(variable, "").strip()]
        if asked:
            return "threads: " + ", ".join(asked) + ", as asked"
        cores = usable_cores()
        return f"threads: TensorFlow's, {cores} intra-op and {cores} inter-op, the fastest measured on a CPU " \
               f"({' or '.join(THREAD_VARIABLES.values())} change them)"

    def detect_devices(self) -> Devices:
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            return Devices("cpu", tuple(device.name for device in tf.config.list_logical_devices("CPU")))
        capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability")
                        for gpu in tf.config.list_physical_devices("GPU")]
        known = [capability for capability in capabilities if capability]
        return Devices("gpu", tuple(device.name for device in gpus),
                       min(known) if len(known) == len(capabilities) else None)

    def initialize(self, coordinator: str, processes: int, process_id: int) -> None:
        # Tried with two workers on 127.0.0.1 (TensorFlow 2.21, Keras 3.15.1): MultiWorkerMirroredStrategy starts,
        # with 2 replicas in sync, but Keras's `fit` fails under it: "ValueError: Attempt to convert a value
        # (PerReplica:{...}) with an unsupported type (<class '...PerReplica'>) to a Tensor" (keras-team/keras#20585).
        raise CnnlabError("several processes: Keras 3 cannot fit under TensorFlow's MultiWorkerMirroredStrategy "
                          "(keras-team/keras#20585); use KERAS_BACKEND=jax")

    def refuse_devices(self, requested: int, used: int) -> None:
        """None refused: MirroredStrategy trains on any number of devices."""

    def data_parallel(self, device_names: tuple[str, ...]):
        """The scope of a MirroredStrategy over `device_names`, in which Keras builds, compiles and fits models."""
        return _mirrored(device_names).scope

    def distributed_devices(self) -> int:
        """The devices the strategy in force splits each batch over; 1 outside any."""
        return tf.distribute.get_strategy().num_replicas_in_sync

    def fit_input(self, batches) -> tuple[object, list]:
        """A tf.data pipeline that serves `batches`, each prepared while the model trains on the one before, and the
        callback that moves `batches` on to the next epoch: Keras's own PyDataset adapter halved training speed at
        batch 32 on a 2-core CPU (see benchmarks/RESULTS.md)."""
        next_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: batches.on_epoch_end())
        return prefetched_batches(batches), [next_epoch]

    def jit_compile(self, device_kind: str) -> bool | str:
        # TensorFlow's own CPU kernels beat XLA's there (benchmarks/RESULTS.md)
        return False if device_kind == "cpu" else "auto"

    def convolution_gradients(self, device_kind: str, precision: str) -> tuple[bool, str]:
        # Measured on a 2-core AVX2 EPYC (benchmarks/RESULTS.md, "Convolution gradients by forward convolutions"):
        # oneDNN's gradient kernels ran at half its forward convolution's speed. Not measured in bfloat16, nor on a
        # GPU (cuDNN).
        if device_kind == "cpu" and precision == "float32":
            return True, "forward convolutions, faster than TensorFlow's gradient kernels on CPUs in float32"
        return False, f"TensorFlow's own, not measured slower on {device_kind.upper()}s in {precision}"

    def fused(self, optimizer):
        """Keras's Adam stepping through TensorFlow's fused Adam kernel, on any device: one pass over each weight and
        its two moments, where Keras's own step is seven element-wise operations, each a pass over memory (for the
        seed CNN's 2.2 M weights on the AVX2 EPYC: 4.1 against 9.2 ms a step, benchmarks/step_kernels.py). The same
        update, as `keras.optimizers.Adam.update_step` writes it. The optimizer stays a plain Adam: what a
        checkpoint saves of it, and any other process loads, is unchanged."""
        if type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad:
            optimizer.update_step = functools.partial(_fused_adam_step, optimizer)
        return optimizer

    def steps_per_execution_limit(self, devices: int) -> int | None:
        # Keras 3.15's multi-step loop under MirroredStrategy fails ("You must feed a value for placeholder tensor
        # ... while/cond"): one step per call over several devices
        return 1 if devices > 1 else None


def _fused_adam_step(optimizer, gradient, variable, learning_rate):
    """Adam's update of `variable` (a tf.Variable: Keras's TensorFlow optimizer hands over each KerasVariable's value)
    by `tf.raw_ops.ResourceApplyAdam`, which computes Keras's formula: alpha = lr sqrt(1 - beta2^t) / (1 - beta1^t),
    m += (g - m)(1 - beta1), v += (g^2 - v)(1 - beta2), variable -= alpha m / (sqrt(v) + epsilon). Keras's own step
    under a distribution strategy, whose per-device variables this does not handle, and for other than float32."""
    if tf.distribute.has_strategy() or variable.dtype != tf.float32:
        return keras.optimizers.Adam.update_step(optimizer, gradient, variable, learning_rate)
    index = optimizer._get_variable_index(variable)  # how Keras's Adam finds the variable's moments
    step = tf.cast(optimizer.iterations + 1, tf.float32)
    beta_1, beta_2 = tf.constant(optimizer.beta_1, tf.float32), tf.constant(optimizer.beta_2, tf.float32)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=optimizer._momentums[index].value.handle, v=optimizer._velocities[index].value.handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, tf.float32),
        beta1=beta_1, beta2=beta_2, epsilon=tf.constant(optimizer.epsilon, tf.float32),
        grad=tf.cast(gradient, tf.float32))


@functools.cache  # one strategy per set of devices: every model of the run must share it
def _mirrored(device_names: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    return tf.distribute.MirroredStrategy(devices=list(device_names))


def prefetched_batches(batches) -> tf.data.Dataset:
    """One epoch of a `batches.ShuffledBatches` (its current epoch, read as each batch is made), each batch made while
    the model trains on the one before.

    Batches are made by the same NumPy code, one at a time and in order, so the data and its order are exactly those
    of the PyDataset; only the waiting goes. Keras starts a new pass over the dataset each epoch, after the epoch-end
    callbacks, one of which must move `batches` on to the next epoch.
    """
    image_shape = (None, *batches.x.shape[1:])
    label_shape = (None, batches.num_classes)
    dataset = tf.data.Dataset.range(len(batches)).map(
        lambda index: tf.numpy_function(lambda i: batches[int(i)], [index],
                                        [tf.as_dtype(batches.x.dtype), tf.float32], stateful=True),
        num_parallel_calls=None,  # one at a time, in order
    )
    dataset = dataset.map(lambda images, labels: (tf.ensure_shape(images, image_shape),
                                                  tf.ensure_shape(labels, label_shape)))
    # A fixed buffer, and tf.data's autotuning off: with autotuning on, each epoch's new iterator replaced the last
    # one, whose destructor waited for the autotuner's thread to wake up, 20-40 s into the next epoch's first step
    # with the GIL held (found with py-spy; benchmarks/RESULTS.md, "whole epochs"). Eight batches ahead are plenty
    # for a producer that makes one in about a millisecond; the model's steps take far longer.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


ENGINE = TensorFlowEngine()
