"""Data: images and labels from any source, as one `Dataset`, then the splits a run trains, validates and tests on.

The pipeline:
    load_dataset(config.data, seed)   sources.py   the first source in SOURCES that recognises data.source loads it;
                                                   data.test_limit then keeps a class-stratified sample of the test set
      -> Dataset                      dataset.py   uint8 NHWC images, labels, image_shape, and a SourceRecord
      -> make_splits(...)             splits.py    validation carved from training, stratified and seeded
      -> batches while training       augment.py, batches.py

The sources, in the order `load_dataset` asks them (sources.SOURCES), each with its own rules:
    cifar10        no path (the official download), a file, or a folder in the   cifar10.py       image_size is 32
                   extracted CIFAR-10 layout                                      (archive.py, safe_pickle.py)
    image_folder   any other folder: images in class subfolders, optionally      image_folder.py  no --sha256
                   under train/ and test/                                         (images.py)

A path that does not exist is refused before any source is asked. Shared by the sources: `cache.py` (where decoded
images are kept) and `sampling.py` (the stratified sampling that the test split, the test limit and the validation
split use). Nothing outside `cnnlab.data` knows which source is in use.
"""

from cnnlab.data.dataset import Dataset, SourceRecord
from cnnlab.data.sources import load_dataset
from cnnlab.data.splits import Splits, make_splits

__all__ = ["Dataset", "SourceRecord", "Splits", "load_dataset", "make_splits"]
