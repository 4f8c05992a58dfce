"""What `fit` reads and validates on, inside the placement's scope: over several devices, whole shards only
(backends/shards.py)."""

from __future__ import annotations

from cnnlab.backends.engine import current_engine


def fit_input(batches) -> tuple[object, list]:
    """What `fit` reads for a `data.batches.ShuffledBatches`, and the callbacks that must go with it, as the backend
    in use wants them (`Engine.fit_input`). Call it, and `fit`, inside the placement's scope: over several devices,
    batches are cut into whole shards, this process's part of each (backends/shards.py)."""
    engine = current_engine()
    devices = engine.distributed_devices()
    if devices > 1:
        from cnnlab.backends.shards import WholeShards  # imports Keras, which `import cnnlab.backends` must not

        batches = WholeShards(batches, devices, *engine.processes())
    return engine.fit_input(batches)


def validation_input(x, y) -> tuple[object, object]:
    """The validation images and labels `fit` evaluates on, called inside the placement's scope: all of them on one
    device; over several, the last len(x) % devices are left out (backends/shards.py)."""
    devices = current_engine().distributed_devices()
    if devices == 1:
        return x, y
    from cnnlab.backends.shards import whole_shards  # imports Keras: see fit_input

    return whole_shards(x, y, devices)
