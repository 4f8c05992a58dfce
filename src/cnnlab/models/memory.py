"""Will a configuration train in this machine's memory? Answered from the configuration alone, before any model is
built: building a model too large for memory is itself what runs out of it.

The estimate, for one training step:

- weights: every parameter in float32 (mixed precision keeps weights and their updates in float32), times the copies
  training holds: the weights, their gradients, the optimizer's slots (Adam's two moment estimates, SGD's momentum)
  and, with lookahead, its running average of the weights;
- activations: every layer's output for one batch, which the forward pass keeps for the backward pass, times
  `ACTIVATION_FACTOR` for the gradients of those outputs that the backward pass holds at its peak. Values take
  2 bytes in bfloat16 and 4 otherwise; "auto" counts 4, as it may resolve to float32.

It is coarse (no framework overhead, no data set, no workspace of convolution kernels) and meant to catch the
configurations that cannot fit by far, such as a dense layer of a billion units.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from cnnlab.common.errors import CnnlabError
from cnnlab.config import RunConfig
from cnnlab.models import check_image_size, kind_of
from cnnlab.models.footprint import Tally
from cnnlab.models.saving import MAX_MODEL_BYTES

BYTES_PER_WEIGHT = 4
OPTIMIZER_SLOTS = {"adam": 2, "sgd": 1, "muon": 1}  # copies of the weights each optimizer keeps
ACTIVATION_FACTOR = 2
GIB = 2**30
# A container's memory limit, when it has one (cgroup v2, then v1); v1 writes a huge number for "no limit".
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


@dataclass(frozen=True)
class TrainingMemory:
    parameters: int  # as keras.Model.count_params counts them
    weight_bytes: int  # weights, gradients and optimizer state
    activation_bytes: int  # one batch's activations and their gradients

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


def estimate_training_memory(config: RunConfig, num_classes: int, image_shape: tuple[int, int, int]) -> TrainingMemory:
    tally = _tally(config, num_classes, tuple(image_shape))
    train = config.train
    copies = 2 + OPTIMIZER_SLOTS[train.optimizer] + (1 if train.lookahead_every else 0)
    bytes_per_value = 2 if train.precision == "bfloat16" else 4
    return TrainingMemory(
        parameters=tally.parameters,
        weight_bytes=tally.parameters * BYTES_PER_WEIGHT * copies,
        activation_bytes=tally.activations * train.batch_size * bytes_per_value * ACTIVATION_FACTOR,
    )


def check_fits(config: RunConfig, num_classes: int, image_shape: tuple[int, int, int]) -> None:
    """Refuse, with the numbers, a configuration whose training needs more memory than this machine has, or whose
    saved model would be larger than cnnlab reads back, or whose layers the images are too small for."""
    check_image_size(config, image_shape)
    needed = estimate_training_memory(config, num_classes, image_shape)
    available, source = memory_limit() or (math.inf, "")
    if needed.total_bytes > available:
        raise CnnlabError(
            f"config: the {config.model} model needs about {needed.total_bytes / GIB:,.1f} GiB for training "
            f"({needed.parameters:.1e} parameters, batch {config.train.batch_size}), more than the "
            f"{available / GIB:,.1f} GiB of {source}; make the model or the batch smaller"
        )
    if needed.parameters * 4 > MAX_MODEL_BYTES:  # float32 weights in the saved files, which cnnlab reads back
        raise CnnlabError(
            f"config: the {config.model} model has {needed.parameters:.1e} parameters, "
            f"{needed.parameters * 4 / GIB:,.1f} GiB saved, over the {MAX_MODEL_BYTES / GIB:.0f} GiB a cnnlab model file may hold; make the model smaller"
        )


def memory_limit() -> tuple[int, str] | None:
    """The most memory a run can have, and what limits it; None where the system does not say.

    Physical RAM, not /proc/meminfo's MemAvailable: whether a configuration is refused should not depend on what else
    happens to run at that moment, and the OS gives a run the memory its caches hold. A container's limit is lower
    than the host's RAM, and wins when it is.
    """
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or these names unknown to it
        return None
    container = _cgroup_limit()
    if container is not None and container < physical:
        return container, "this container's memory limit"
    return physical, "physical memory on this machine"


def _cgroup_limit() -> int | None:
    for path in CGROUP_LIMITS:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):  # absent, unreadable, or "max": no limit here
            continue
    return None


def _tally(config: RunConfig, num_classes: int, image_shape: tuple[int, int, int]) -> Tally:
    return kind_of(config).tally(config, num_classes, image_shape)
