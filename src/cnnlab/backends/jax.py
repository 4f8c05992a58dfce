"""The JAX-only part of cnnlab: its devices and data parallelism through `keras.distribution.DataParallel`."""

from __future__ import annotations

import contextlib

import jax
import keras

from cnnlab.backends import Devices


def detect_devices() -> Devices:
    devices = jax.devices()  # the default backend's: its accelerators if it has any, else the host's CPU devices
    kind = "gpu" if devices[0].platform in ("gpu", "cuda", "rocm") else devices[0].platform
    capabilities = [getattr(device, "compute_capability", None) for device in devices]
    capability = None
    if kind == "gpu" and all(capabilities):
        capability = min(tuple(int(part) for part in str(text).split(".")[:2]) for text in capabilities)
    return Devices(kind, tuple(f"{device.platform}:{device.id}" for device in devices), capability)


def data_parallel(device_names: tuple[str, ...]):
    """Data parallelism over `device_names`, for the rest of this process.

    Set globally rather than inside a scope: Keras's JAX trainer reads the distribution when `fit`, `evaluate` and
    `predict` run, not only when variables are made, so each of them must see it.
    """
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=list(device_names)))
    return contextlib.nullcontext
