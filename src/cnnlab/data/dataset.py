"""What every source makes: a `Dataset` of uint8 NHWC images and integer labels, with the `SourceRecord` that a run
directory keeps so that later commands rebuild the same splits. Nothing downstream knows which source made them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# The longest class name any source may give, a CIFAR-10 archive's meta file or an image folder's class folder: the
# names go into tables, figures and caches (CIFAR-10's at this fixed width); the official names have at most 10.
MAX_CLASS_NAME_CHARS = 64


@dataclass(frozen=True)
class SourceRecord:
    """Where the images came from and what they were, as a run directory records it (JSON-ready)."""

    kind: str  # the name of the source that loaded them: "cifar10" or "image_folder"
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
    # What `cnnlab data info` shows beyond counts: an image folder's "picture sizes", the sizes seen before resizing
    details: dict[str, str] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.record.classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of every image, as the images hold it: what a model for this data set takes."""
        height, width, channels = self.x_train.shape[1:]
        return int(height), int(width), int(channels)
