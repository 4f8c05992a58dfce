"""The processes of one run over several machines, as flags or the environment say, checked before any backend
starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cnnlab.common.errors import CnnlabError

MAX_PROCESSES = 65_536


@dataclass(frozen=True)
class Cluster:
    """The processes of one run: where process 0 listens, how many there are, and which one this is."""

    coordinator: str  # HOST:PORT of process 0
    processes: int
    process_id: int


def cluster_from(coordinator: str | None = None, processes: int | None = None,
                 process_id: int | None = None) -> Cluster | None:
    """The run's processes as flags (else CNNLAB_COORDINATOR, CNNLAB_PROCESSES, CNNLAB_PROCESS_ID) say; None for
    one process. Checked here, in one line, before any backend starts."""
    coordinator = coordinator or os.environ.get("CNNLAB_COORDINATOR") or None
    processes = processes if processes is not None else _whole_number("CNNLAB_PROCESSES")
    process_id = process_id if process_id is not None else _whole_number("CNNLAB_PROCESS_ID")
    if coordinator is None and processes in (None, 1) and process_id in (None, 0):
        return None
    if coordinator is None or processes is None or process_id is None:
        raise CnnlabError("several processes need all of --coordinator HOST:PORT, --processes N and --process-id I "
                          "(or CNNLAB_COORDINATOR, CNNLAB_PROCESSES, CNNLAB_PROCESS_ID)")
    _check(coordinator, processes, process_id)
    return Cluster(coordinator, processes, process_id)


def _check(coordinator: str, processes: int, process_id: int) -> None:
    """Refuse, in one line, a coordinator that is not HOST:PORT, or a process count or id out of range."""
    host, colon, port = coordinator.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise CnnlabError(f"--coordinator must be HOST:PORT, got {coordinator[:80]!r}")
    if not 1 <= processes <= MAX_PROCESSES:
        raise CnnlabError(f"--processes must be between 1 and {MAX_PROCESSES:,}, got {processes}")
    if not 0 <= process_id < processes:
        raise CnnlabError(f"--process-id must be between 0 and {processes - 1} (--processes {processes}), "
                          f"got {process_id}")


def _whole_number(variable: str) -> int | None:
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise CnnlabError(f"{variable} must be a whole number, got {text[:20]!r}")
    return int(text)
