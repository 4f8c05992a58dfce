"""Where a run computes: the Keras backend, its devices, the precision and the distribution scope.

This package is the only part of cnnlab that knows which Keras backend is in use. `placement_for(config)` answers,
once per process, everything the rest needs: which devices and how many, the precision "auto" resolves to and why,
the compile options the backend wants, and `scope()`, inside which every model of a run is built and compiled (a
`tf.distribute` strategy on TensorFlow, a `keras.distribution` on JAX, nothing on one device).

The modules, one job each; importing this package imports none of Keras or its backends:
    engine.py      `Engine`, what cnnlab asks of a backend, its defaults those of one device in one process; its
                   subclasses in tensorflow.py (tf.data, tf.distribute), jax.py and torch.py, each imported only when
                   its backend is the one in use, so cnnlab runs on JAX or PyTorch without TensorFlow installed
    placement.py   `placement_for`: devices, precision, compile options, scope, the chief's working directory
    inputs.py      what `fit` reads and validates on; shards.py cuts it into whole shards over several devices
    cluster.py     a run's processes (`cluster_from`)
    startup.py     `import_keras`: Keras started, the CPU split, the processes joined, the start-up noise held back
    machine.py     what a result was measured on: CPU, accelerators, library versions

Environment:
    CNNLAB_CPU_DEVICES=N   split this machine's CPU into N logical devices (TensorFlow) or N host devices (JAX), so
                           that data-parallel training (`--devices N`) can be tried and tested without GPUs. Read once,
                           by `import_keras`, before the backend initialises its devices.
    CNNLAB_COORDINATOR=HOST:PORT, CNNLAB_PROCESSES=N, CNNLAB_PROCESS_ID=I
                           one run over N processes (machines), on JAX: what the flags --coordinator, --processes and
                           --process-id say, for launchers that set the environment (see `cluster_from`).
"""

from cnnlab.backends.cluster import Cluster, cluster_from
from cnnlab.backends.engine import Devices, Engine, current_engine, detect_devices, engine_for
from cnnlab.backends.inputs import fit_input, validation_input
from cnnlab.backends.placement import Placement, choose_device_count, choose_precision, placement_for
from cnnlab.backends.startup import (NO_DRIVER_CONSEQUENCE, START_UP_NOISE, cpu_devices_asked, import_keras,
                                     start_up_problems)

__all__ = ["NO_DRIVER_CONSEQUENCE", "START_UP_NOISE", "Cluster", "Devices", "Engine", "Placement",
           "choose_device_count", "choose_precision", "cluster_from", "cpu_devices_asked", "current_engine",
           "detect_devices", "engine_for", "fit_input", "import_keras", "placement_for", "start_up_problems",
           "validation_input"]
