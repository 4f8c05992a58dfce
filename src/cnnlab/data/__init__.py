"""Data from any source, through one entry point: `load_dataset(config.data, seed)` -> `Dataset`; then splits."""

from cnnlab.data.dataset import Dataset, SourceRecord, load_dataset
from cnnlab.data.splits import Splits, make_splits

__all__ = ["Dataset", "SourceRecord", "Splits", "load_dataset", "make_splits"]
