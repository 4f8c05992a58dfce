"""The PyTorch engine: its devices. Keras's torch backend trains on one device in one process (`Engine`'s defaults),
one step per call."""

from __future__ import annotations

import torch

from cnnlab.backends.engine import Devices, Engine


class TorchEngine(Engine):
    name = "torch"

    def detect_devices(self) -> Devices:
        if not torch.cuda.is_available():
            return Devices("cpu", ("cpu:0",))
        count = torch.cuda.device_count()
        return Devices("gpu", tuple(f"cuda:{index}" for index in range(count)),
                       min(torch.cuda.get_device_capability(index) for index in range(count)))

    def steps_per_execution_limit(self, devices: int) -> int | None:
        return 1  # PyTorch runs one step per call


ENGINE = TorchEngine()
