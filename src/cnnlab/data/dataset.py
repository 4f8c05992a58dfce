"""The one entry point to data: `load_dataset(config.data, seed)` -> `Dataset`, whatever the source.

Sources, in the order `load_dataset` considers them:
- no source: the official CIFAR-10 archive, downloaded and hash-checked (`cifar10.py`);
- a file, or a folder in the extracted CIFAR-10 layout: a CIFAR-10 archive or folder (`cifar10.py`);
- any other folder: images in class subfolders, optionally under `train/` and `test/` (`image_folder.py`).

Nothing outside `cnnlab.data` knows which source is in use: everything downstream sees uint8 NHWC images, integer
labels, class names, and a `SourceRecord` that a run directory keeps so that later commands rebuild the same splits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from cnnlab.common.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.config import DataConfig


@dataclass(frozen=True)
class SourceRecord:
    """Where the images came from and what they were, as a run directory records it (JSON-ready)."""

    kind: str  # "cifar10" or "image_folder"
    path: str  # resolved path of the archive or folder
    content_hash: str | None  # SHA-256 of a CIFAR-10 archive; of the file listing (names, sizes, times) of a folder
    hash_status: str  # CIFAR-10: "official", "matches --sha256", "unofficial", "not checked (folder)"; else "listing"
    image_size: int  # images are image_size x image_size x 3
    classes: tuple[str, ...]
    test_files: tuple[str, ...] = ()  # an image folder's test images (relative paths, in test-set order)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Dataset:
    """A whole data set: uint8 NHWC images (NumPy arrays, or memory-mapped ones for large folders) and labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    record: SourceRecord
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (file, why) for each unreadable file left out
    # What `cnnlab data info` shows beyond counts; an image folder's "image_sizes": the sizes seen before resizing
    details: dict[str, str] = field(default_factory=dict)  # what a person is told of the source beyond counts

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.record.classes


def load_dataset(data: DataConfig, seed: int, cache_dir: Path | None = None,
                 warn: Callable[[str], None] | None = None) -> Dataset:
    """The data set `data.source` names (None: the official CIFAR-10 download), as the settings in `data` make it:
    with `data.test_limit`, N of its test images only.

    `seed` fixes an image folder's test split when it has no test/ folder.
    """
    return _fewer_test_images(_load_source(data, seed, cache_dir, warn), data.test_limit)


def _fewer_test_images(dataset: Dataset, limit: int | None) -> Dataset:
    """The data set with `limit` of its test images (all of them for None): a class-stratified sample, the same every
    time, in the test set's order. Not simply the first ones: an image folder lists its test images class by class.
    An image folder's list of test files is cut alike, so that the run records the test images it was scored on."""
    from cnnlab.data.splits import stratified_sample  # splits imports this module's types

    if limit is None:
        return dataset
    if limit > len(dataset.y_test):
        raise CnnlabError(f"test limit {limit} (data.test_limit) exceeds the {len(dataset.y_test):,} test images")
    index = stratified_sample(dataset.y_test, limit, seed=0)
    test_files = tuple(dataset.record.test_files[i] for i in index) if dataset.record.test_files else ()
    return replace(dataset, x_test=dataset.x_test[index], y_test=dataset.y_test[index],
                   record=replace(dataset.record, test_files=test_files))


def _load_source(data: DataConfig, seed: int, cache_dir: Path | None,
                 warn: Callable[[str], None] | None) -> Dataset:
    """Each source module is imported only when used: they import this module's types, and an image folder needs
    Pillow, which CIFAR-10 does not."""
    from cnnlab.data import cifar10

    path = None if data.source is None else Path(data.source).expanduser()
    if path is not None and not path.exists():
        raise CnnlabError(f"data path not found: {path}")
    if path is None or not path.is_dir() or cifar10.is_cifar10_folder(path):
        if data.image_size not in (None, cifar10.IMAGE_SIZE):
            raise CnnlabError(
                f"data.image_size is {data.image_size}, but CIFAR-10 images are {cifar10.IMAGE_SIZE} px and are used "
                "as they are; for larger VGG16 inputs set --vgg16-size instead (VGG16 upscales inside the model)"
            )
        return cifar10.load_cifar10(path, data.sha256, cache_dir, warn)
    if data.sha256 is not None:
        raise CnnlabError(f"--sha256 checks a CIFAR-10 archive, but {path} is a folder of images")
    from cnnlab.data.image_folder import load_image_folder

    return load_image_folder(path, data, seed, cache_dir, warn)
