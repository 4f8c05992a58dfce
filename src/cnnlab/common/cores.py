"""How many CPU cores this process may use: what cnnlab sizes its thread and process pools by, and says it ran on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (Linux, where a container or
    `taskset` may allow fewer than the machine has), else every core the system reports (macOS and Windows have no
    `os.sched_getaffinity`)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
