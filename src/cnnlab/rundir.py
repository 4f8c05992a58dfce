"""The run directory: the unit of work. Every file in it is written atomically.

Layout:
    config.json      the fully resolved RunConfig
    status.json      {"state": "running" | "finished" | "failed", "reason": ...}
    history.csv      one row per epoch (Keras CSVLogger)
    checkpoints/     best epoch so far, by validation accuracy
    model.keras      the final model (loads with plain keras.saving.load_model)
    metrics.json     test metrics, timings, library versions, hardware
    test_predictions.npz  the model's class probabilities for every test image (float16), and the true labels
    figures/         learning curves and confusion matrix (PNG)
    .lock            the process writing here now (removed when it is done; a dead process's lock is taken over)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from cnnlab.errors import CnnlabError

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
MODEL = "model.keras"
TEST_PREDICTIONS = "test_predictions.npz"
CHECKPOINTS = "checkpoints"
FIGURES = "figures"
LOCK = ".lock"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (same suffix, so writers that check it are happy); on success rename
    it over `final` in one step, on failure remove it. A reader sees the old file or the new one, never half."""
    final = Path(final)
    temporary = final.with_name(f".tmp-{os.getpid()}-{final.name}")  # the whole name kept: writers check suffixes
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it, even after a power cut
        os.replace(temporary, final)
    except OSError as exc:  # a full disk or a folder that turned read-only: the old file stays as it was
        raise CnnlabError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CnnlabError(f"{path} not found") from None
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CnnlabError(f"{path} is not valid JSON") from None


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
        raise CnnlabError(f"--out {path} already exists and is not empty; choose another folder")
    try:
        (path / FIGURES).mkdir(parents=True, exist_ok=True)
        (path / CHECKPOINTS).mkdir(exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    return path


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock while writing into it: a second process refuses, and the lock of a process
    that died (killed, crashed) is taken over."""
    lock = Path(run_dir) / LOCK
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None and _alive(holder):
                raise CnnlabError(f"{run_dir} is in use by process {holder}; wait for it to finish") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
        except OSError as exc:
            raise CnnlabError(f"cannot write in {run_dir}: {exc.strerror or exc}") from None
    with os.fdopen(descriptor, "w") as handle:
        handle.write(str(os.getpid()))
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _lock_holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None  # unreadable or half-written: treated as stale


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def set_status(run_dir: Path, state: str, reason: str | None = None) -> None:
    write_json(Path(run_dir) / STATUS, {"state": state, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def require_finished(run_dir: Path) -> Path:
    """Return `run_dir` if it holds a finished run; otherwise explain what is wrong with it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"run directory not found: {run_dir}")
    if not (run_dir / STATUS).is_file() or not (run_dir / CONFIG).is_file():
        raise CnnlabError(f"{run_dir} is not a cnnlab run directory (no {STATUS} or {CONFIG})")
    status = read_json(run_dir / STATUS)
    state = status.get("state") if isinstance(status, dict) else None
    if state != "finished":
        reason = f": {status['reason']}" if isinstance(status, dict) and status.get("reason") else ""
        raise CnnlabError(f"{run_dir} is not a finished run (status: {state}{reason})")
    if not (run_dir / MODEL).is_file():
        raise CnnlabError(f"{run_dir} has no {MODEL}")
    return run_dir
