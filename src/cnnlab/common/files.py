"""Files written atomically, and JSON read with one-line errors: what every writer in cnnlab uses."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator

from cnnlab.common.errors import CnnlabError

TEMPORARY_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (same suffix, so writers that check it are happy); on success rename
    it over `final` in one step, on failure remove it. A reader sees the old file or the new one, never half."""
    final = Path(final)
    # The whole name kept: writers check suffixes.
    temporary = final.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{final.name}")
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points at it, even after a power cut
        os.replace(temporary, final)
        _fsync_folder(final.parent)  # and the rename itself is on disk, not only in the folder's cached copy
    except OSError as exc:  # a full disk or a folder that turned read-only: the old file stays as it was
        raise CnnlabError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # some network and FUSE filesystems
            raise  # cannot sync a folder at all; the rename has happened, and there is nothing more to do there
    finally:
        os.close(descriptor)


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# cnnlab's own JSON files (a run's config, metrics, status, a plan) are a few hundred KB at most: a bigger one is
# not one of them, and is never read whole (a 1.5 GB sparse metrics.json took predict to 3.15 GB before).
MAX_JSON_BYTES = 64 << 20


def read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as file:
            # The size from the file system (at most the limit), then a read of that much and one byte more:
            # read(n) sets aside n bytes at once, and a file that grows meanwhile is still refused
            payload = file.read(min(os.fstat(file.fileno()).st_size, MAX_JSON_BYTES) + 1)
        if len(payload) > MAX_JSON_BYTES:
            raise CnnlabError(f"{path} is over {MAX_JSON_BYTES >> 20} MiB: not a cnnlab file")
        return json.loads(payload.decode("utf-8"))
    except FileNotFoundError:
        raise CnnlabError(f"{path} not found") from None
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CnnlabError(f"{path} is not valid JSON") from None
    except RecursionError:  # json reads nested arrays and objects recursively
        raise CnnlabError(f"{path} is not a cnnlab file: its values are nested too deeply") from None


def remove_leftover_temporaries(folder: Path) -> None:
    """Delete the `.tmp-*` files of writes that a kill interrupted, anywhere under `folder`."""
    for path in Path(folder).rglob(f"{TEMPORARY_PREFIX}*"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
