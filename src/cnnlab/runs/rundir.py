"""The run directory: the unit of work. Every file in it is written atomically.

Layout:
    config.json      the fully resolved RunConfig
    source.json      the data it trains on: kind, path, content hash, image size, classes, an image folder's test
                     files (cnnlab.runs.provenance); later commands refuse data that no longer matches it
    test_files.txt   an image folder's test images, one a line (only when the test set was carved from the folder)
    skipped_files.txt  unreadable files left out of the data, and why (only when there were any)
    status.json      {"state": "running" | "finished" | "failed" | "stopped", "reason": ...}
    history.csv      one row per epoch (Keras CSVLogger)
    checkpoints/     best epoch so far, by validation accuracy
    model.keras      the final model (loads with plain keras.saving.load_model)
    metrics.json     test metrics, timings, library versions, hardware
    test_predictions.npz  the model's class probabilities for every test image (float16), and the true labels
    figures/         learning curves and confusion matrix (PNG)
    tensorboard/     TensorBoard logs (only with --tensorboard)
    export/          what `cnnlab export` wrote by default, each artifact with its classes and parity files
    error.txt        the full text of the error that stopped the run (the terminal and status.json get one line)
    .lock            flock-ed by the process writing here now (its PID inside, for messages); the kernel releases
                     it when that process ends, however it ends, so a killed writer never leaves the folder locked
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from cnnlab.common.errors import CnnlabError, one_line
from cnnlab.common.files import atomic_path, read_json, remove_leftover_temporaries, write_json

CONFIG = "config.json"
SOURCE = "source.json"
TEST_FILES = "test_files.txt"
SKIPPED_FILES = "skipped_files.txt"
STATUS = "status.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
MODEL = "model.keras"
TEST_PREDICTIONS = "test_predictions.npz"
STATES = ("running", "finished", "failed", "stopped")  # stopped: by a signal, its state saved, to resume
CHECKPOINTS = "checkpoints"
FIGURES = "figures"
LEARNING_CURVES_PNG = "learning_curves.png"  # in figures/
CONFUSION_MATRIX_PNG = "confusion_matrix.png"  # in figures/
EXPORT = "export"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
ERROR_LOG = "error.txt"


def default_run_dir(preset: str, model: str, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{preset}-{model}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{preset}-{model}-{stamp}-{suffix}"
    return candidate


def create_run_dir(path: Path) -> Path:
    """Create an empty run directory; an existing non-empty folder is never reused silently."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnlabError(f"--out {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not never_started(path):
            raise CnnlabError(f"--out {path} already exists and is not empty; choose another folder")
        with locked(path):  # a start that failed before its first write (a full disk): taken again, unless in use
            pass
    try:
        (path / FIGURES).mkdir(parents=True, exist_ok=True)
        (path / CHECKPOINTS).mkdir(exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    return path


def never_started(path: Path) -> bool:
    """Whether `path` holds only what `create_run_dir` makes and the lock, all empty: a run whose start failed before
    its first file was written (a full disk), which a new start may take over."""
    entries = list(Path(path).iterdir())
    return bool(entries) and all(entry.name in (FIGURES, CHECKPOINTS, LOCK) for entry in entries) and not any(
        any(entry.iterdir()) for entry in entries if entry.is_dir())


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock while writing into it: a second writer, in this process or another, is refused.

    The lock is the kernel's (flock on `.lock`), not a PID in a file: it is released when its holder ends, killed or
    not, so there is no stale lock to judge, and two processes can never both take it. The holder writes its PID
    into the file only so that a refusal can name it, and empties the file when it lets go. Temporary files that a
    killed writer left behind are removed once the lock is held, as no other writer can be using them then.
    (Written on fcntl rather than the `filelock` package: filelock 3 truncates the file when it tries the lock, which
    wipes the holder's PID, and falls back to a PID-file lock on filesystems without flock: the weakness this
    replaces.)
    """
    run_dir = Path(run_dir)
    try:
        descriptor = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CnnlabError(f"cannot write in {run_dir}: {exc.strerror or exc}") from None
    try:
        _take(descriptor, run_dir)
    except BaseException:
        os.close(descriptor)  # without emptying the file: it names the holder
        raise
    try:
        remove_leftover_temporaries(run_dir)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)  # no PID of a process that no longer holds it
        os.close(descriptor)  # closing releases the lock


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds `run_dir`'s lock now (is writing there)."""
    try:
        descriptor = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: never written to, or not there at all
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # releases the lock if it was taken
    return False


def _take(descriptor: int, run_dir: Path) -> None:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise CnnlabError(f"{run_dir} is in use by {who}; wait for it to finish") from None
    except OSError as exc:  # a filesystem without locks: refuse rather than write unguarded
        raise CnnlabError(f"cannot lock {run_dir / LOCK}: {exc.strerror or exc}") from None
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode("ascii"), 0)
    except OSError as exc:
        raise CnnlabError(f"cannot write in {run_dir}: {exc.strerror or exc}") from None


def set_status(run_dir: Path, state: str, reason: str | None = None) -> None:
    """Record the run's state; a reason is kept to one line, as every later command prints it on one."""
    reason = None if reason is None else one_line(reason)
    write_json(Path(run_dir) / STATUS, {"state": state, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def record_failure(run_dir: Path, exc: BaseException) -> None:
    """Mark the run failed: the error's first line as the reason, its whole text and traceback in error.txt."""
    run_dir = Path(run_dir)
    with atomic_path(run_dir / ERROR_LOG) as temporary:
        temporary.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    set_status(run_dir, "failed", f"{one_line(exc) or type(exc).__name__} (full text in {run_dir / ERROR_LOG})")


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json as {"state": ..., "reason": ...}; anything else in its place is an error naming the file."""
    path = Path(run_dir) / STATUS
    status = read_json(path)
    if not isinstance(status, dict) or status.get("state") not in STATES:
        raise CnnlabError(f"{path} is damaged (no valid 'state')")
    reason = status.get("reason")
    return {"state": status["state"], "reason": one_line(str(reason)) if reason else None}
