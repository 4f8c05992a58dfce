"""The one entry point to data, `load_dataset(config.data, seed)` -> `Dataset`, and the table of sources it asks.

A source is a module that reads one kind of data and keeps that kind's rules, plus one row of SOURCES: its name (the
`kind` of the records it makes), whether it recognises a path (None: no path given), and its loader. `load_dataset`
refuses a path that does not exist, then asks the rows in order; the first that recognises the path loads it. Adding
a source is its module and its row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from cnnlab.common.errors import CnnlabError
from cnnlab.data import cifar10, image_folder
from cnnlab.data.dataset import Dataset
from cnnlab.data.sampling import stratified_sample

if TYPE_CHECKING:
    from cnnlab.config import DataConfig


@dataclass(frozen=True)
class Source:
    name: str  # the `kind` its records carry
    recognises: Callable[[Path | None], bool]
    load: Callable[..., Dataset]  # (path, data config, seed, cache_dir, warn): the source's rules, then its data


# Asked in this order. CIFAR-10 comes first because its extracted layout is a folder too; between them the two take
# every path that exists (CIFAR-10 whatever is not a folder, image folders every other folder).
SOURCES = (
    Source("cifar10", cifar10.recognises, cifar10.load_source),
    Source("image_folder", image_folder.recognises, image_folder.load_source),
)


def load_dataset(data: DataConfig, seed: int, cache_dir: Path | None = None,
                 warn: Callable[[str], None] | None = None) -> Dataset:
    """The data set `data.source` names (None: the official CIFAR-10 download), as the settings in `data` make it:
    with `data.test_limit`, N of its test images only.

    `seed` fixes an image folder's test split when it has no test/ folder.
    """
    path = None if data.source is None else Path(data.source).expanduser()
    if path is not None and not path.exists():
        raise CnnlabError(f"data path not found: {path}")
    source = next(source for source in SOURCES if source.recognises(path))
    return _fewer_test_images(source.load(path, data, seed, cache_dir, warn), data.test_limit)


def _fewer_test_images(dataset: Dataset, limit: int | None) -> Dataset:
    """The data set with `limit` of its test images (all of them for None): a class-stratified sample, the same every
    time, in the test set's order. Not simply the first ones: an image folder lists its test images class by class.
    An image folder's list of test files is cut alike, so that the run records the test images it was scored on."""
    if limit is None:
        return dataset
    if limit > len(dataset.y_test):
        raise CnnlabError(f"test limit {limit} (data.test_limit) exceeds the {len(dataset.y_test):,} test images")
    index = stratified_sample(dataset.y_test, limit, seed=0)
    test_files = tuple(dataset.record.test_files[i] for i in index) if dataset.record.test_files else ()
    return replace(dataset, x_test=dataset.x_test[index], y_test=dataset.y_test[index],
                   record=replace(dataset.record, test_files=test_files))
