"""The PyTorch-only part of cnnlab: its devices (Keras's torch backend trains on one)."""

from __future__ import annotations

import torch

from cnnlab.backends import Devices


def detect_devices() -> Devices:
    if not torch.cuda.is_available():
        return Devices("cpu", ("cpu:0",))
    count = torch.cuda.device_count()
    return Devices("gpu", tuple(f"cuda:{index}" for index in range(count)),
                   min(torch.cuda.get_device_capability(index) for index in range(count)))
