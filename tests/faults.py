"""Run `cnnlab` with a fault: SIGKILL the process half-way through its Nth write of one kind.

    python tests/faults.py POINT N -- cnnlab arguments...

POINT is where the kill lands:
    state   Keras's BackupAndRestore state save: the newest weights file is left cut in half
    torn    Keras's BackupAndRestore state save, between its two writes: new weights, the previous epoch's metadata
    best    the save of a new best epoch's checkpoint (checkpoints/best.keras): half the file written
    final   the write of the final model.keras: half the file written
A kill "half-way" is simulated by writing the file, cutting it to half its length and killing the process at once:
the same bytes on disk as a real kill in the middle of the write, but at a moment the test chooses. A test tool only:
cnnlab itself has no fault hooks.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _kill_with_half_written(path: Path) -> None:
    path = Path(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def _filepath(model, args, kwargs):
    return kwargs["filepath"] if "filepath" in kwargs else args[0]


def _kill(path: Path) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _on_nth_call(owner, name: str, nth: int, written_path, counts=lambda path: True,
                 kill=_kill_with_half_written) -> None:
    original = getattr(owner, name)
    calls = []

    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        path = written_path(self, args, kwargs)
        if counts(str(path)):
            calls.append(path)
            if len(calls) == nth:
                kill(path)
        return result

    setattr(owner, name, wrapper)


def main() -> int:
    point, nth, separator, *arguments = sys.argv[1:]
    assert separator == "--", __doc__
    import keras

    if point == "state":
        _on_nth_call(keras.callbacks.BackupAndRestore, "_save_model", int(nth),
                     lambda callback, args, kwargs: callback._weights_path)
    elif point == "torn":
        _on_nth_call(keras.Model, "save_weights", int(nth), _filepath,
                     counts=lambda path: path.endswith("latest.weights.h5"), kill=_kill)
    elif point in ("best", "final"):
        saved_to = "best.keras" if point == "best" else "-model.keras"  # atomic writes save to .tmp-PID-<name>
        _on_nth_call(keras.Model, "save", int(nth), _filepath, counts=lambda path: path.endswith(saved_to))
    else:
        raise SystemExit(f"unknown fault point {point!r}")
    from cnnlab.cli import main as cnnlab_main

    return cnnlab_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
