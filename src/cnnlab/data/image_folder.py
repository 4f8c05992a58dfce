"""The image-folder source: your own images, a folder of class subfolders (the layout of
`keras.utils.image_dataset_from_directory`) as a `Dataset`, decoded once into a memory-mapped cache.

    photos/cat/*.jpg, photos/dog/*.png, ...            a test set is carved from them (stratified, seeded)
    photos/train/<class>/..., photos/test/<class>/...  the test/ images are the test set, as they are

As a row of `sources.SOURCES` it recognises any folder (CIFAR-10, asked before it, takes those in its own layout);
its rule: no --sha256, which checks an archive, and a folder is none.

What counts as an image, and what is left out:
- Files are taken by suffix (IMAGE_SUFFIXES, any case), then decoded by `images.decode_image`, which trusts only the
  content. Names starting with "." are ignored at every level: they are system files (.DS_Store, macOS's ._photo.jpg,
  .ipynb_checkpoints/), never someone's pictures.
- Any other file is skipped *and listed* with its reason, like an unreadable image: a class of .heic photos silently
  left out would train a different data set than the user thinks, so they are told. `data.strict` makes it an error.
- A folder inside a class folder is descended, as Keras does: `cat/2019/*.jpg` are cats.
- A link whose target lies outside the data folder (a file or a folder) is refused: a folder from elsewhere must not
  make cnnlab read any file on the machine. A link to a file inside is followed; a link to a folder inside is not:
  its images are reached anyway, and following it would count them twice (or loop).
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from cnnlab.common.cores import usable_cores
from cnnlab.common.errors import CnnlabError
from cnnlab.common.text import terminal_text
from cnnlab.config import DataConfig
from cnnlab.data import images
from cnnlab.data.cache import cache_dir as cache_root
from cnnlab.data.dataset import MAX_CLASS_NAME_CHARS, Dataset, SourceRecord
from cnnlab.data.sampling import count_of, stratified_sample

# Without data.image_size, folders become 64 x 64: 4x CIFAR-10's pixels, enough to tell most photographed objects
# apart, above VGG16's 32 px minimum, and small enough that the tutorial's CNN still trains on a laptop CPU.
DEFAULT_IMAGE_SIZE = 64
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
CACHE_FORMAT = 1  # bump when the cached files change meaning
CHUNK_IMAGES = 64  # per task for a decoding process: big enough to pay for sending it, small enough to share the work
PROGRESS_DELAY_S = 2.0  # the progress bar appears only once decoding has taken this long: none for a small folder
COPY_ROWS = 1024  # images copied per step when writing a split, so a data set larger than RAM is copied in pieces


@dataclass(frozen=True)
class ListedFile:
    relative: str  # path inside the data folder, with "/" separators
    label: int
    bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    """What the data folder holds, before any image is decoded."""

    folder: Path  # as given
    root: Path  # resolved: links must stay inside it
    classes: tuple[str, ...]
    files: tuple[ListedFile, ...]  # candidate images: training (or all) first, then the test/ folder's, each sorted
    test_from: int | None  # index of the first test/ file; None: no test/ folder, the test set is carved
    skipped: tuple[tuple[str, str], ...]  # (relative path, why) of files that are not candidate images

    @property
    def digest(self) -> str:
        """SHA-256 of the classes and every candidate's path, size and modification time: any change to an image
        file changes it."""
        entries = [self.classes, self.test_from, [(f.relative, f.bytes, f.mtime_ns) for f in self.files]]
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


@dataclass(frozen=True)
class Decoded:
    """The readable images of a listing, as the cache holds them."""

    images: np.ndarray  # (readable, size, size, 3) uint8, memory-mapped, in listing order
    kept: np.ndarray  # listing index of each image
    unreadable: tuple[tuple[int, str], ...]  # (listing index, why)
    sizes: Counter  # (width, height) before resizing -> how many images


def recognises(path: Path | None) -> bool:
    """Any folder: one in CIFAR-10's layout never reaches this source, which is asked after CIFAR-10."""
    return path is not None and path.is_dir()


def load_source(path: Path, data: DataConfig, seed: int, cache_dir: Path | None = None,
                warn: Callable[[str], None] | None = None) -> Dataset:
    """The images under `path` as `load_image_folder` reads them, once `data` is known to ask nothing of an archive."""
    if data.sha256 is not None:
        raise CnnlabError(f"--sha256 checks a CIFAR-10 archive, but {path} is a folder of images")
    return load_image_folder(path, data, seed, cache_dir, warn)


def load_image_folder(path: Path, data: DataConfig, seed: int, cache_dir: Path | None = None,
                      warn: Callable[[str], None] | None = None) -> Dataset:
    """The images under `path` at `data.image_size` (default DEFAULT_IMAGE_SIZE), resized as `data.resize` says,
    with the test set of the test/ folder or carved as `data.test_size` and `seed` say."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    size = data.image_size or DEFAULT_IMAGE_SIZE
    listing = list_folder(Path(path).expanduser())
    if data.strict and listing.skipped:
        _refuse_in_strict_mode(listing, *listing.skipped[0])
    entry = cache_root(cache_dir) / f"image-folder-{_cache_key(listing, size, data.resize)}"
    decoded = _read_decoded(entry, listing, size) or _decode_into_cache(entry, listing, size, data, seed)
    train_index, test_index = _checked_split(listing, decoded, data, seed)
    x_train, x_test = _split_images(entry, decoded.images, train_index, test_index, seed)
    skipped = (*listing.skipped, *((listing.files[index].relative, why) for index, why in decoded.unreadable))
    if skipped:
        files_skipped = f"{len(skipped)} file{'s' * (len(skipped) != 1)}"
        warn(f"{files_skipped} skipped (not readable images): `cnnlab data info` lists them, and a run keeps the "
             "list in its skipped_files.txt")
    labels = _labels(listing)[decoded.kept]
    files = [listing.files[index].relative for index in decoded.kept]
    return Dataset(
        x_train=x_train,
        y_train=labels[train_index],
        x_test=x_test,
        y_test=labels[test_index],
        record=SourceRecord(kind="image_folder", path=str(listing.root), content_hash=listing.digest,
                            hash_status="listing", image_size=size, classes=listing.classes,
                            test_files=tuple(files[index] for index in test_index)),
        skipped=tuple(sorted(skipped)),
        details={"picture sizes": _size_summary(decoded.sizes)},
    )


# ---------------------------------------------------------------------------------------------------------------------
# Listing: the layout, the classes, the candidate images


def list_folder(folder: Path) -> Listing:
    """The classes and candidate images of `folder`, in one of the two layouts, or one CnnlabError line."""
    if not folder.exists():
        raise _refusal(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise _refusal(f"{folder} is not a folder")
    root = folder.resolve()  # walked from here, so that every path found is inside it as written
    top, skipped = _class_folders(root, root)
    if {"train", "test"} <= top.keys():
        return _list_train_and_test(folder, root, top, skipped)
    classes = _enough_classes(folder, top)
    files, skipped = _list_classes(root, [(label, top[name]) for label, name in enumerate(classes)], skipped)
    return Listing(folder, root, classes, tuple(files), None, tuple(skipped))


def _list_train_and_test(folder: Path, root: Path, top: dict[str, Path], skipped: list) -> Listing:
    others = sorted(top.keys() - {"train", "test"})
    if others:
        raise _refusal(f"{folder} holds train/ and test/, and also {', '.join(others)}: with train/ and test/, "
                          "every class folder goes inside both (validation images are carved from train/)")
    (train, train_skipped), (test, test_skipped) = (_class_folders(top[part], root) for part in ("train", "test"))
    if train.keys() != test.keys():
        only_train, only_test = sorted(train.keys() - test.keys()), sorted(test.keys() - train.keys())
        raise _refusal(f"{folder}: train/ and test/ hold different classes (only in train/: "
                          f"{', '.join(only_train) or '-'}; only in test/: {', '.join(only_test) or '-'})")
    classes = _enough_classes(folder / "train", train)
    train_files, skipped = _list_classes(root, [(label, train[name]) for label, name in enumerate(classes)],
                                         [*skipped, *train_skipped, *test_skipped])
    test_files, skipped = _list_classes(root, [(label, test[name]) for label, name in enumerate(classes)], skipped)
    return Listing(folder, root, classes, (*train_files, *test_files), len(train_files), tuple(skipped))


def _class_folders(folder: Path, root: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """The folders directly in `folder` by name, and the files there (listed as skipped: they belong to no class)."""
    classes, skipped = {}, []
    for path, kind in _entries(folder, root):
        if kind == "folder":
            classes[path.name] = path
        else:
            skipped.append((_relative(path, root), "not in a class folder"))
    return classes, skipped


def _enough_classes(folder: Path, classes: dict[str, Path]) -> tuple[str, ...]:
    if len(classes) < 2:
        found = f"only {next(iter(classes))}/" if classes else "none"
        raise _refusal(f"{folder} needs a subfolder per class, at least 2 (found {found}); the layout is "
                          f"{folder}/<class>/<images>, or {folder}/train/<class>/ and {folder}/test/<class>/")
    for name in classes:
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise _refusal(f"class folder {name[:40]}... of {folder}: its name has {len(name)} characters, over the "
                           f"{MAX_CLASS_NAME_CHARS} a class name may have; rename the folder")
    return tuple(sorted(classes))


def _list_classes(root: Path, classes: list[tuple[int, Path]], skipped: list):
    files = []
    for label, class_folder in classes:
        found = [_listed(path, label, root, skipped) for path in _walk(class_folder, root)]
        found = [file for file in found if file is not None]
        if not found:
            raise _no_readable_image(class_folder, root)
        files.extend(sorted(found, key=lambda file: file.relative))
    return files, skipped


def _listed(path: Path, label: int, root: Path, skipped: list) -> ListedFile | None:
    """`path` as a candidate image; or None, with the reason added to `skipped`."""
    relative = _relative(path, root)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        skipped.append((relative, "not an image file type"))
        return None
    try:
        status = path.stat()
    except OSError as exc:
        skipped.append((relative, f"cannot read ({exc.strerror or type(exc).__name__})"))
        return None
    if not stat.S_ISREG(status.st_mode):  # a pipe or device named like a picture: opening it could block forever
        skipped.append((relative, "not a regular file"))
        return None
    return ListedFile(relative, label, status.st_size, status.st_mtime_ns)


def _walk(top: Path, root: Path) -> Iterator[Path]:
    """Every file under `top`, subfolders included. Iterative: a deeply nested tree must not exhaust the stack."""
    pending = [top]
    while pending:
        for path, kind in _entries(pending.pop(), root):
            if kind == "folder":
                pending.append(path)
            else:
                yield path


def _entries(folder: Path, root: Path) -> Iterator[tuple[Path, str]]:
    """(path, "folder" or "file") for each entry of `folder` that counts: hidden names and links to folders inside
    the data folder are passed over, links leaving it refused. Special files (pipes, sockets) count as files: they
    are then skipped, never opened."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise _refusal(f"cannot read folder {folder}: {exc.strerror or type(exc).__name__}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            _refuse_link_out(path, root)
            if entry.is_dir():
                continue
        yield path, "folder" if entry.is_dir(follow_symlinks=False) else "file"


def _refuse_link_out(link: Path, root: Path) -> None:
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop of links: it leads nowhere, and is skipped as unreadable
        return
    if not target.is_relative_to(root):
        raise _refusal(f"{link}: refusing a link to {target}, outside the data folder {root}; "
                          "copy the file or folder into it")


def _relative(path: Path, root: Path) -> str:
    """`path` inside the data folder, as recorded and shown. Names must be UTF-8: they end up in JSON files."""
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(relative).decode("utf-8", "backslashreplace")  # the bytes as they are: caf\xe9
        raise _refusal(f"{root}/{shown}: the name is not valid UTF-8; rename it") from None
    return relative


def _no_readable_image(class_folder: Path, root: Path) -> CnnlabError:
    return _refusal(f"class {class_folder.name!r} ({root}/{_relative(class_folder, root)}/) has no readable image")


def _refusal(message: str) -> CnnlabError:
    """A CnnlabError that stays one line whatever the folder, class and file names in it hold (newlines included)."""
    return CnnlabError(terminal_text(message))


def _labels(listing: Listing) -> np.ndarray:
    return np.array([file.label for file in listing.files], dtype=np.int32)


# ---------------------------------------------------------------------------------------------------------------------
# Checks that need the decoded images: strict mode, empty classes, classes too small to split


def _checked_split(listing: Listing, decoded: Decoded, data: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into `decoded.images` of the training and test images, once every class is known to have at least
    one image in each of training, validation (as `make_splits` will carve it) and test."""
    if data.strict and decoded.unreadable:
        index, why = decoded.unreadable[0]
        _refuse_in_strict_mode(listing, listing.files[index].relative, why)
    labels = _labels(listing)[decoded.kept]
    empty = np.setdiff1d(np.arange(len(listing.classes)), labels)
    if len(empty):
        raise _no_readable_image(listing.root / _class_path(listing, empty[0]), listing.root)
    if listing.test_from is None:
        test_index = stratified_sample(labels, _test_count(data.test_size, len(labels)), seed)
    else:
        test_index = np.flatnonzero(decoded.kept >= listing.test_from)
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    _refuse_small_classes(listing, labels[train_index], labels[test_index], data, seed)
    return train_index, test_index


def _class_path(listing: Listing, label: int) -> str:
    return ("train/" if listing.test_from is not None else "") + listing.classes[label]


def _test_count(test_size: float, total: int) -> int:
    count = count_of(test_size, total)
    if not 0 < count < total:
        raise _refusal(f"data.test_size {test_size:g} makes a test set of {count} of the {total} readable images; "
                          "it needs at least 1 and must leave training images")
    return count


def _refuse_small_classes(listing: Listing, y_train: np.ndarray, y_test: np.ndarray, data: DataConfig,
                          seed: int) -> None:
    classes = len(listing.classes)
    val_count = count_of(data.val_size, len(y_train))
    val = np.bincount(y_train[stratified_sample(y_train, val_count, seed)], minlength=classes)
    train, test = np.bincount(y_train, minlength=classes) - val, np.bincount(y_test, minlength=classes)
    for label in range(classes):
        if train[label] < 1 or test[label] < 1 or (val_count > 0 and val[label] < 1):
            raise _refusal(
                f"class {listing.classes[label]!r} has too few readable images for one in each of training, "
                f"validation and test ({train[label]}, {val[label]}, {test[label]} with data.val_size "
                f"{data.val_size:g} and data.test_size {data.test_size:g}); add images to it"
            )


def _refuse_in_strict_mode(listing: Listing, relative: str, why: str) -> None:
    raise _refusal(f"{listing.root}/{relative}: {why} (data.strict refuses any file it cannot use)")


# ---------------------------------------------------------------------------------------------------------------------
# Decoding, on every core


def _decode_all(paths: list[Path], size: int, resize: str) -> Iterator[tuple[np.ndarray | None, object]]:
    """(pixels, (width, height)) or (None, why) for each path, in order, decoded by one process per core."""
    chunks = [paths[start:start + CHUNK_IMAGES] for start in range(0, len(paths), CHUNK_IMAGES)]
    workers = min(usable_cores(), len(chunks))
    with tqdm(total=len(paths), desc="decoding images", unit="image", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty(), delay=PROGRESS_DELAY_S) as progress:
        for results in _map_chunks(chunks, size, resize, workers):
            progress.update(len(results))
            yield from results


def _map_chunks(chunks: list[list[Path]], size: int, resize: str, workers: int) -> Iterator[list]:
    if workers <= 1:  # a folder of one chunk: starting a process would cost more than decoding it
        yield from map(_decode_chunk, chunks, repeat(size), repeat(resize))
        return
    # "spawn": the caller may have imported TensorFlow, whose threads make a forked child unsafe
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(_decode_chunk, chunks, repeat(size), repeat(resize))
    finally:
        pool.shutdown(cancel_futures=True)  # after an error (an image over the limit), no decoding left running


def _decode_chunk(paths: list[Path], size: int, resize: str) -> list[tuple[np.ndarray | None, object]]:
    return [_decode_one(path, size, resize) for path in paths]


def _decode_one(path: Path, size: int, resize: str) -> tuple[np.ndarray | None, object]:
    try:
        return images.decode_image(path, (size, size), resize)
    except images.ImageTooLarge as error:  # a refusal of the whole folder, not a file to skip
        raise images.ImageTooLarge(terminal_text(error)) from None
    except CnnlabError as error:
        return None, terminal_text(str(error).replace(f"{path}: ", ""))  # the reason; the caller names the file


def _size_summary(sizes: Counter) -> str:
    """The picture sizes found, for a person: "20-25 x 12-17 px, 6 distinct; most common 20x12 (3), ..."."""
    widths, heights = [width for width, _ in sizes], [height for _, height in sizes]
    common = ", ".join(f"{width}x{height} ({count})" for (width, height), count in sizes.most_common(5))
    return (f"{min(widths)}-{max(widths)} x {min(heights)}-{max(heights)} px, {len(sizes)} distinct; "
            f"most common {common}")


# ---------------------------------------------------------------------------------------------------------------------
# The decoded-image cache: a folder per listing, image size and resize mode; written whole, then renamed into place
#
#   image-folder-<key>/images.npy      the readable images, (n, size, size, 3) uint8, read memory-mapped
#   image-folder-<key>/meta.json       which listed files they are, which were unreadable and why, sizes seen
#   image-folder-<key>/split-.../      a carved test split's x_train.npy and x_test.npy (per seed and test count)


def _cache_key(listing: Listing, size: int, resize: str) -> str:
    return hashlib.sha256(f"{listing.digest} {size} {resize} {CACHE_FORMAT}".encode()).hexdigest()[:32]


def _decode_into_cache(entry: Path, listing: Listing, size: int, data: DataConfig, seed: int) -> Decoded:
    with _staging(entry) as staging:
        decoded = _decode_into(staging, listing, size, data.resize)
        _checked_split(listing, decoded, data, seed)  # a folder that is refused leaves no cache behind
    stored = _read_decoded(entry, listing, size)
    if stored is None:
        raise _refusal(f"{entry}: the decoded images just written cannot be read back; check the disk")
    return stored


def _decode_into(staging: Path, listing: Listing, size: int, resize: str) -> Decoded:
    paths = [listing.root / file.relative for file in listing.files]
    pixels = _disk_backed_memmap(staging / "images.npy", np.uint8, (len(paths), size, size, 3))
    kept, unreadable, sizes = [], [], Counter()
    for index, (image, outcome) in enumerate(_decode_all(paths, size, resize)):
        if image is None:
            unreadable.append((index, outcome))
        else:
            pixels[len(kept)] = image
            kept.append(index)
            sizes[tuple(outcome)] += 1
    pixels.flush()
    del pixels
    if unreadable:  # rare: the file is rewritten with only the readable images, so a slice of it is a data set
        _shrink(staging / "images.npy", len(kept))
    sizes_seen = [[width, height, count] for (width, height), count in sizes.items()]
    meta = {"kept": kept, "unreadable": unreadable, "sizes": sizes_seen}
    _write_synced(staging / "meta.json", json.dumps(meta).encode())
    return Decoded(np.load(staging / "images.npy", mmap_mode="r"), np.array(kept, dtype=np.int64),
                   tuple(map(tuple, unreadable)), sizes)


def _shrink(path: Path, rows: int) -> None:
    full = np.load(path, mmap_mode="r")
    smaller = path.with_name("shrunk.npy")
    _copy_rows(full, np.arange(rows), smaller)
    del full
    os.replace(smaller, path)


def _copy_rows(source: np.ndarray, rows: np.ndarray, destination: Path) -> None:
    """`source[rows]` written to `destination` a piece at a time, never all in memory."""
    out = _disk_backed_memmap(destination, source.dtype, (len(rows), *source.shape[1:]))
    for start in range(0, len(rows), COPY_ROWS):
        out[start:start + COPY_ROWS] = source[rows[start:start + COPY_ROWS]]
    out.flush()  # on disk before the folder holding it is renamed into place


def _disk_backed_memmap(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy file mapped for writing, its blocks reserved on disk first: the file is made sparse, and a write
    through a map to a page the disk cannot back kills the process with SIGBUS (exit 135, nothing said, the staging
    folder left behind); reserving says "No space left on device" before any pixel is written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):  # Linux and most Unixes; elsewhere the file is written as before
        with open(path, "r+b") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem that cannot reserve: as before
                    raise
    return array


def _write_synced(path: Path, content: bytes) -> None:
    with open(path, "wb") as file:
        file.write(content)
        os.fsync(file.fileno())


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A new folder beside `final`, renamed to `final` if the block succeeds (replacing a damaged one), removed
    otherwise: readers see a whole cache entry or none. A cache that cannot be written is an error, not a fallback:
    the images are decoded to disk so that a folder larger than memory fits."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    except OSError as exc:
        raise _refusal(f"cannot write decoded images to {final.parent} ({exc.strerror or exc}); "
                          "set CNNLAB_CACHE to a writable folder") from None
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)  # damaged: it was read and refused just before
        os.rename(staging, final)
    except OSError as exc:
        raise _refusal(f"cannot write decoded images to {final.parent} ({exc.strerror or exc}); "
                          "free some space or set CNNLAB_CACHE to another folder") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_decoded(entry: Path, listing: Listing, size: int) -> Decoded | None:
    """The cache entry, if it is exactly what `_decode_into` writes for this listing; None if absent or damaged."""
    try:
        meta = json.loads((entry / "meta.json").read_bytes())
        kept, unreadable, sizes = _parse_meta(meta, len(listing.files))
        pixels = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, TypeError, KeyError, RecursionError):  # json's and numpy's errors are ValueErrors
        return None
    if not isinstance(pixels, np.memmap) or pixels.dtype != np.uint8 or pixels.shape != (len(kept), size, size, 3):
        return None
    return Decoded(pixels, kept, unreadable, sizes)


def _parse_meta(meta: dict, listed: int) -> tuple[np.ndarray, tuple[tuple[int, str], ...], Counter]:
    """The stored outcome of every listed file, each exactly once; ValueError if the file says anything else."""
    kept = [int(index) for index in meta["kept"]]
    unreadable = tuple((int(index), str(why)) for index, why in meta["unreadable"])
    sizes = Counter({(int(width), int(height)): int(count) for width, height, count in meta["sizes"]})
    if sorted(kept + [index for index, _ in unreadable]) != list(range(listed)) or kept != sorted(kept):
        raise ValueError("the cache does not account for each listed file once")
    if not kept or sum(sizes.values()) != len(kept):
        raise ValueError("the cache's image sizes do not match its images")
    return np.array(kept, dtype=np.int64), unreadable, sizes


# ---------------------------------------------------------------------------------------------------------------------
# Splits: training and test images as separate memory-mapped arrays


def _split_images(entry: Path, pixels: np.ndarray, train_index: np.ndarray, test_index: np.ndarray,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A test/ folder's images follow the training images, so slices of the cache serve. A carved test set is
    scattered through it: both parts are copied once into a split folder (per seed and test count), since indexing
    a memory-mapped array with a list of rows would read it all into memory."""
    if len(test_index) and test_index[0] == len(train_index):
        return pixels[:len(train_index)], pixels[len(train_index):]
    split = entry / f"split-seed{seed}-test{len(test_index)}"
    parts = _read_split(split, pixels.shape, len(train_index), len(test_index))
    if parts is None:
        with _staging(split) as staging:
            _copy_rows(pixels, train_index, staging / "x_train.npy")
            _copy_rows(pixels, test_index, staging / "x_test.npy")
        parts = _read_split(split, pixels.shape, len(train_index), len(test_index))
    if parts is None:
        raise _refusal(f"{split}: the split just written cannot be read back; check the disk")
    return parts


def _read_split(split: Path, shape: tuple[int, ...], train: int, test: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        parts = tuple(np.load(split / f"x_{part}.npy", mmap_mode="r", allow_pickle=False) for part in ("train", "test"))
    except (OSError, ValueError):
        return None
    expected = ((train, *shape[1:]), (test, *shape[1:]))
    if any(part.dtype != np.uint8 or part.shape != want for part, want in zip(parts, expected)):
        return None
    return parts
