"""The CIFAR-10 source: the official archive, a local copy of it, or an extracted folder; verified, validated, cached.

As a row of `sources.SOURCES` it recognises no path (the official download), anything that is not a folder (an
archive), and a folder in the extracted CIFAR-10 layout; its rule: images are IMAGE_SIZE px, used as they are.

Where `load_cifar10` takes the bytes from:
- a local `.tar.gz` in the official layout, or an extracted `cifar-10-batches-py` folder (or its parent);
- without a path, the official archive, downloaded and cached by Keras (`keras.utils.get_file`, `~/.keras/datasets`)
  and checked against the official SHA-256.

A local archive whose hash is not the official one is used with a one-line warning (re-packed copies are common and
harmless); `sha256=` makes the check strict. Decoded arrays are cached as an uncompressed `.npz` keyed by the
content hash, so a second load costs a hash and a read instead of six unpicklings.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import sys
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.common.files import atomic_path
from cnnlab.data.archive import MAX_MEMBER_BYTES, read_tar_members
from cnnlab.data.cache import cache_dir as cache_root
from cnnlab.data.dataset import MAX_CLASS_NAME_CHARS, Dataset, SourceRecord
from cnnlab.data.safe_pickle import UnsafePickleError, safe_loads

if TYPE_CHECKING:
    from cnnlab.config import DataConfig

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
ARCHIVE_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
BATCH_FILES = (*TRAIN_BATCHES, TEST_BATCH)
IMAGES_PER_BATCH = 10_000
NUM_CLASSES = 10
CLASS_NAMES_DTYPE = np.dtype(f"<U{MAX_CLASS_NAME_CHARS}")
CACHE_FORMAT = 1  # bump when the cached arrays change meaning
IMAGE_SIZE = 32


def recognises(path: Path | None) -> bool:
    """Whether `path` is CIFAR-10's: None (the official download), anything that is not a folder (an archive), or a
    folder in the extracted layout."""
    return path is None or not path.is_dir() or is_cifar10_folder(path)


def load_source(path: Path | None, data: DataConfig, seed: int, cache_dir: Path | None = None,
                warn: Callable[[str], None] | None = None) -> Dataset:
    """CIFAR-10 from `path` as `data` asks for it (`seed` plays no part: its test set is fixed). Its images are
    IMAGE_SIZE px and used as they are, so any other `data.image_size` is refused."""
    if data.image_size not in (None, IMAGE_SIZE):
        raise CnnlabError(
            f"data.image_size is {data.image_size}, but CIFAR-10 images are {IMAGE_SIZE} px and are used "
            "as they are; for larger inputs to a pretrained backbone set --backbone-size instead (it upscales inside "
            "its model)"
        )
    return load_cifar10(path, data.sha256, cache_dir, warn)


def load_cifar10(
    source: str | os.PathLike | None = None,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> Dataset:
    """CIFAR-10 from `source` (None: the official download); its record's content hash is the archive's SHA-256, or
    for a folder a hash of its files' contents."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    path = _download_official() if source is None else Path(source).expanduser()
    if not path.exists():
        raise CnnlabError(f"data path not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise CnnlabError(f"{path} is neither a file nor a folder")
    if path.is_dir():
        if sha256 is not None:
            raise CnnlabError(f"--sha256 checks an archive, but {path} is a folder")
        folder = path / ARCHIVE_FOLDER if (path / ARCHIVE_FOLDER).is_dir() else path
        files = _read_folder(folder)
        digest, status = _content_key(files), "not checked (folder)"
    else:
        digest = _sha256_of(path)
        status = _hash_status(path, digest, sha256, from_download=source is None, warn=warn)
        files = None

    cache_file = cache_root(cache_dir) / f"cifar10-{digest[:24]}-v{CACHE_FORMAT}.npz"
    arrays = _read_cache(cache_file)
    if arrays is None:
        if files is None:
            files = read_tar_members(path, ARCHIVE_FOLDER, {*BATCH_FILES, META_FILE})
        arrays = _decode(files, str(path))
        _write_cache(cache_file, arrays, warn)
    record = SourceRecord(kind="cifar10", path=str(path.resolve()), content_hash=digest, hash_status=status,
                          image_size=IMAGE_SIZE, classes=tuple(str(name) for name in arrays["class_names"]))
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], record)


def is_cifar10_folder(path: Path) -> bool:
    """Whether folder `path` is the extracted CIFAR-10 layout (or holds it), rather than a folder of images."""
    return (path / ARCHIVE_FOLDER).is_dir() or any((path / name).exists() for name in (TRAIN_BATCHES[0], META_FILE))


# ---------------------------------------------------------------------------------------------------------------------
# Where the bytes come from, and whether to trust them


def _download_official() -> Path:
    import keras  # imported here: only the download path needs it, and it is slow to import

    try:
        fetched = keras.utils.get_file(
            fname="cifar-10-python.tar.gz",
            origin=OFFICIAL_URL,
            file_hash=OFFICIAL_SHA256,
            hash_algorithm="sha256",
            extract=False,
        )
    except Exception as exc:  # Keras raises bare Exceptions for network failures and ValueError for a bad hash
        raise CnnlabError(
            f"could not download CIFAR-10 from {OFFICIAL_URL} ({first_line(exc)}); "
            "give a local copy with --data PATH or CNNLAB_DATA"
        ) from None
    return Path(fetched)


def _hash_status(path: Path, digest: str, wanted: str | None, from_download: bool, warn) -> str:
    if wanted is not None:
        if digest != wanted.lower():
            raise CnnlabError(f"{path}: SHA-256 is {digest}, not the {wanted.lower()} given with --sha256")
        return "matches --sha256"
    if digest == OFFICIAL_SHA256:
        return "official"
    if from_download:  # Keras checked the hash already; reaching here means the cache changed under us
        raise CnnlabError(f"{path}: downloaded archive does not match the official SHA-256")
    warn(
        f"{path} is not the official CIFAR-10 archive (sha256 {digest[:16]}...); using it as a local copy "
        "(pass --sha256 HEX to require a hash)"
    )
    return "unofficial"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(2**22), b""):
                digest.update(block)
    except OSError as exc:
        raise CnnlabError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _read_folder(folder: Path) -> dict[str, bytes]:
    root = folder.resolve()
    return {name: _read_folder_file(folder / name, root) for name in (*BATCH_FILES, META_FILE)
            if (folder / name).is_file()}


def _read_folder_file(file: Path, root: Path) -> bytes:
    """One file of an extracted folder, under the same size cap as an archive member.

    A link that stays inside the folder is harmless (the content is still the folder's); one that leaves it is how a
    folder from elsewhere would make us read any file on the machine, so it is refused.
    """
    target = file.resolve()
    if not target.is_relative_to(root):
        raise CnnlabError(f"{file}: refusing a link to {target}, outside {root}; copy the file into the folder")
    try:
        with open(target, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= MAX_MEMBER_BYTES:
                content = handle.read(MAX_MEMBER_BYTES + 1)  # the read stops at the cap even if stat was stale
                size = len(content)
    except OSError as exc:
        raise CnnlabError(f"cannot read {file}: {exc.strerror or exc}") from None
    if size > MAX_MEMBER_BYTES:
        raise CnnlabError(f"{file}: {size:,} bytes, over the {MAX_MEMBER_BYTES:,} limit for a CIFAR-10 file")
    return content


def _content_key(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Parsing and validation


def _decode(files: dict[str, bytes], source: str) -> dict[str, np.ndarray]:
    missing = [name for name in (*BATCH_FILES, META_FILE) if name not in files]
    if missing:
        raise CnnlabError(f"{source}: missing {', '.join(missing)} (expected the official {ARCHIVE_FOLDER} layout)")
    class_names = _decode_meta(files[META_FILE], source)
    train = [_decode_batch(files[name], f"{source}: {name}") for name in TRAIN_BATCHES]
    x_test, y_test = _decode_batch(files[TEST_BATCH], f"{source}: {TEST_BATCH}")
    return {
        "x_train": np.concatenate([images for images, _ in train]),
        "y_train": np.concatenate([labels for _, labels in train]),
        "x_test": x_test,
        "y_test": y_test,
        "class_names": np.array(class_names, dtype=CLASS_NAMES_DTYPE),
    }


def _unpickle_dict(payload: bytes, where: str) -> dict[str, object]:
    if not payload:
        raise CnnlabError(f"{where}: empty file")
    try:
        loaded = safe_loads(payload)
    except UnsafePickleError as exc:
        raise CnnlabError(
            f"{where}: {first_line(exc)}; the file is not a CIFAR-10 batch and may be malicious"
        ) from None
    except pickle.UnpicklingError as exc:
        raise CnnlabError(f"{where}: truncated or corrupt pickle ({first_line(exc)})") from None
    if not isinstance(loaded, dict):
        raise CnnlabError(f"{where}: expected a dict, found {type(loaded).__name__}")
    # Only text keys can name CIFAR-10 fields; others are skipped rather than printed (a key can be any tuple).
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in loaded.items()
            if isinstance(key, (bytes, str))}


def _decode_batch(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle_dict(payload, where)
    if "data" not in batch or "labels" not in batch:
        raise CnnlabError(f"{where}: missing 'data' or 'labels'")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (IMAGES_PER_BATCH, 3072):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise CnnlabError(f"{where}: 'data' must be uint8 of shape (10000, 3072), found {dtype} of shape {shape}")
    try:
        labels = np.asarray(batch["labels"])
    except (ValueError, TypeError):
        raise CnnlabError(f"{where}: 'labels' is not a list of integers") from None
    if labels.shape != (IMAGES_PER_BATCH,) or labels.dtype.kind not in "iu":
        raise CnnlabError(f"{where}: 'labels' must be 10000 integers, found {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise CnnlabError(f"{where}: labels out of range 0..9 (found {labels.min()}..{labels.max()})")
    # Each row is 1024 red, 1024 green, then 1024 blue values: channels-first; models want NHWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.uint8)


def _decode_meta(payload: bytes, source: str) -> list[str]:
    meta = _unpickle_dict(payload, f"{source}: {META_FILE}")
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != NUM_CLASSES:
        raise CnnlabError(f"{source}: {META_FILE}: 'label_names' must list {NUM_CLASSES} class names")
    decoded = [name.decode("utf-8", "replace") if isinstance(name, bytes) else name for name in names]
    if (not all(isinstance(name, str) and 0 < len(name) <= MAX_CLASS_NAME_CHARS for name in decoded)
            or len(set(decoded)) != len(decoded)):
        raise CnnlabError(
            f"{source}: {META_FILE}: class names must be distinct non-empty strings of at most "
            f"{MAX_CLASS_NAME_CHARS} characters"
        )
    return decoded


# ---------------------------------------------------------------------------------------------------------------------
# The decoded-array cache


# Exactly what `_write_cache` stores; a cache holding anything else is stale or damaged and is rebuilt.
_CACHED_ARRAYS = {
    "x_train": ((len(TRAIN_BATCHES) * IMAGES_PER_BATCH, 32, 32, 3), np.dtype(np.uint8)),
    "y_train": ((len(TRAIN_BATCHES) * IMAGES_PER_BATCH,), np.dtype(np.uint8)),
    "x_test": ((IMAGES_PER_BATCH, 32, 32, 3), np.dtype(np.uint8)),
    "y_test": ((IMAGES_PER_BATCH,), np.dtype(np.uint8)),
    "class_names": ((NUM_CLASSES,), CLASS_NAMES_DTYPE),
}
# The arrays (184 MB) plus a few hundred bytes of zip and .npy headers each, with room to spare.
MAX_CACHE_BYTES = sum(math.prod(shape) * dtype.itemsize for shape, dtype in _CACHED_ARRAYS.values()) + 2**16
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_cache(cache_file: Path) -> dict[str, np.ndarray] | None:
    try:
        if not cache_file.is_file() or cache_file.stat().st_size > MAX_CACHE_BYTES:
            return None
        if not _cache_headers_match(cache_file):
            return None
        with np.load(cache_file, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in _CACHED_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, RecursionError, NotImplementedError, zlib.error,
            zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt from the source, never trusted
    labels_fit = all(arrays[key].max() < NUM_CLASSES for key in ("y_train", "y_test"))
    names = arrays["class_names"].tolist()
    return arrays if labels_fit and all(names) and len(set(names)) == NUM_CLASSES else None


def _cache_headers_match(cache_file: Path) -> bool:
    """Whether each cached array's .npy header gives the expected shape and dtype, checked before numpy reads any:
    numpy allocates what the header claims, so a header claiming petabytes must not reach it. (A zip member's
    `file_size` does not bound that allocation; the header check does, and the file's size bounds the rest.)"""
    with zipfile.ZipFile(cache_file) as archive:
        for name, (shape, dtype) in _CACHED_ARRAYS.items():
            with archive.open(f"{name}.npy") as member:
                read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(member))
                if read_header is None:
                    return False
                stored_shape, _, stored_dtype = read_header(member)
                if stored_shape != shape or stored_dtype != dtype:
                    return False
    return True


def _write_cache(cache_file: Path, arrays: dict[str, np.ndarray], warn) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as temporary:
            np.savez(temporary, **arrays)
    except OSError as exc:
        warn(f"could not cache decoded CIFAR-10 in {cache_file.parent} ({exc.strerror or exc}); continuing without")
