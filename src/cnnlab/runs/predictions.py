"""test_predictions.npz: every test image's class probabilities and true label, as a run's evaluation wrote them.

Read only after its zip directory and .npy headers match what metrics.json says was scored, so that a damaged or
tampered file is refused in one line and cannot make a reader allocate without bound.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.common.text import short_text

# The most a predictions file may hold (CIFAR-10's hold 200 kB).
MAX_PREDICTIONS_BYTES = 256 * 2**20
NPZ_OVERHEAD_BYTES = 64 * 2**10  # zip headers and .npy headers beside the arrays themselves


def read_predictions(path: Path, metrics: dict, metrics_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (probabilities, labels) of test_predictions.npz at `path`, checked against the run's `metrics`."""
    return _read_npz(path, *scored_shape(metrics, metrics_file))


def scored_shape(metrics: dict, metrics_file: Path) -> tuple[int, int]:
    """(test images, classes) that metrics.json says the run was scored on: the shape its predictions must have."""
    classes = len(metrics["data"]["classes"])
    images = sum(map(sum, metrics["confusion_matrix"]))
    if images < 1 or images * classes * 2 > MAX_PREDICTIONS_BYTES:
        raise CnnlabError(f"{metrics_file} is damaged (its confusion matrix counts {images:,} test images)")
    return images, classes


def _read_npz(path: Path, images: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The (probabilities, labels) of test_predictions.npz. Its zip directory and .npy headers are checked against
    the shapes the run was scored on before any array is read; anything else is reported as damage, in one line."""
    expected = {"probabilities.npy": ((images, classes), np.dtype("<f2")), "labels.npy": ((images,), np.dtype("u1"))}
    try:
        if path.stat().st_size > _npz_size_limit(expected):  # checked before the zip directory is read
            raise ValueError("larger than its arrays can be")
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, expected)
            probabilities, labels = (_read_member(archive, name) for name in expected)
    except (OSError, EOFError, ValueError, TypeError, RecursionError, NotImplementedError, RuntimeError,
            zipfile.BadZipFile, zlib.error) as exc:
        # Damage shows up as any of these: truncated or corrupt zip data, an encrypted or unknown compression method,
        # a .npy header that does not parse (numpy's ValueError, or RecursionError for deeply nested text).
        raise CnnlabError(f"{path} is damaged ({short_text(first_line(exc), 200)})") from None
    if labels.size and labels.max() >= classes:
        raise CnnlabError(f"{path} is damaged (a label is not one of the {classes} classes)")
    return probabilities, labels


def _array_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _npz_size_limit(expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> int:
    return sum(_array_bytes(*layout) for layout in expected.values()) + NPZ_OVERHEAD_BYTES


def _check_members(archive: zipfile.ZipFile, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Raise ValueError unless the archive holds exactly the expected .npy members, with the expected headers."""
    names = archive.namelist()
    if sorted(names) != sorted(expected):
        raise ValueError(f"holds {', '.join(map(repr, names)) or 'nothing'}, expected {', '.join(expected)}")
    for name, (shape, dtype) in expected.items():
        info = archive.getinfo(name)
        if info.file_size > _array_bytes(shape, dtype) + NPZ_OVERHEAD_BYTES:  # bounds what the header read inflates
            raise ValueError(f"{name} is larger than its array can be")
        with archive.open(info) as member:
            header = _npy_header(member)
            size = member.tell() + _array_bytes(shape, dtype)
        if header != (shape, dtype):
            raise ValueError(f"{name} holds {header[1]} {header[0]}, expected {dtype} {shape}")
        if info.file_size != size:  # then reading the array inflates exactly what its header says
            raise ValueError(f"{name} is {info.file_size:,} bytes, expected {size:,}")


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:  # cnnlab writes version 1.0; 3.0 only adds unicode field names, which no array of ours has
        raise ValueError(f"unsupported .npy version {version}")
    return shape, dtype


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as member:
        return np.lib.format.read_array(member, allow_pickle=False)
