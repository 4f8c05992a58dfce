"""Unpickling that cannot run code: only the globals the CIFAR-10 batch files need are resolved.

The official batches are Python 2 pickles of a dict holding a NumPy array; rebuilding one needs numpy's array
reconstructor, `ndarray` and `dtype`, nothing else. Archives re-written under Python 3 at protocol 2 also encode
bytes through `_codecs.encode(text, "latin1")`, which is allowed in that one form. Any other global is refused.
"""

from __future__ import annotations

import _codecs
import io
import pickle

import numpy as np


def _latin1_encode(text: str, encoding: str) -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return _codecs.encode(text, encoding)


_reconstruct = np.ndarray.__reduce__(np.empty(0))[0]


def _empty_array(subtype, shape, dtype):
    """numpy's array reconstructor, but always starting empty: the real shape arrives with the data in
    __setstate__, so a file cannot make us allocate a huge array it does not contain."""
    return _reconstruct(subtype, (0,), dtype)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load global {module}.{name}") from None


def safe_loads(payload: bytes):
    """Unpickle `payload` (Python 2 str becomes bytes, as the official files expect) with the allow-list."""
    return _AllowListUnpickler(io.BytesIO(payload), encoding="bytes").load()
