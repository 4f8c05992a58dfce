"""The JAX engine: its devices, its processes, and data parallelism through `keras.distribution.DataParallel`."""

from __future__ import annotations

import functools

import jax
import keras
import numpy as np

from cnnlab.backends.engine import Devices, Engine


class JaxEngine(Engine):
    name = "jax"

    def initialize(self, coordinator: str, processes: int, process_id: int) -> None:
        """Join the run's other processes (Keras 3's multi-host path); before JAX starts its devices."""
        keras.distribution.initialize(coordinator, processes, process_id)

    def detect_devices(self) -> Devices:
        # this process's devices of the default backend: its accelerators if it has any, else the host's CPU devices
        devices = jax.local_devices()
        kind = "gpu" if devices[0].platform in ("gpu", "cuda", "rocm") else devices[0].platform
        capabilities = [getattr(device, "compute_capability", None) for device in devices]
        capability = None
        if kind == "gpu" and all(capabilities):
            capability = min(tuple(int(part) for part in str(text).split(".")[:2]) for text in capabilities)
        return Devices(kind, tuple(f"{device.platform}:{device.id}" for device in devices), capability)

    def processes(self) -> tuple[int, int]:
        """This process's index among the processes of a run, and their count (0 and 1 on one machine)."""
        return jax.process_index(), jax.process_count()

    def refuse_devices(self, requested: int, used: int) -> None:
        """None refused: DataParallel trains on any number of devices."""

    def global_device_names(self, per_process: int) -> tuple[str, ...]:
        """The first `per_process` devices of every process of the run, in the names keras.distribution uses."""
        chosen = [device for index in range(jax.process_count())
                  for device in [device for device in jax.devices() if device.process_index == index][:per_process]]
        return tuple(f"{device.platform}:{device.id}" for device in chosen)

    def data_parallel(self, device_names: tuple[str, ...]):
        """The scope (a context factory) in which Keras builds, compiles and fits models data-parallel.

        Keras's JAX trainer shards what `fit` reads only while the distribution is in force, so `fit` must run inside
        it too; `evaluate` and `predict` outside it run on the same (replicated) weights, on batches of any size.
        """
        return _data_parallel(device_names).scope

    def distributed_devices(self) -> int:
        """The devices the distribution in force splits each batch over; 1 outside any."""
        distribution = keras.distribution.distribution()
        return 1 if distribution is None else int(np.size(distribution.device_mesh.devices))


@functools.cache  # one distribution per set of devices: every model of the run must share it
def _data_parallel(device_names: tuple[str, ...]) -> keras.distribution.DataParallel:
    # Each process already feeds its own part of every batch (backends/shards.py), so Keras must not shard again;
    # without this, Keras refuses any input but a tf.data.Dataset once there are several processes.
    return keras.distribution.DataParallel(devices=list(device_names), auto_shard_dataset=False)


ENGINE = JaxEngine()
