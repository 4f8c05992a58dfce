"""Unpickling that cannot run code, crash the interpreter or be made to allocate much more than the pickle's size.

The official batches are Python 2 pickles (protocol 2) of a dict whose `data` is a NumPy array. Unpickled the usual
way, the file's arguments go straight to NumPy (`np.dtype(...)`, `ndarray.__setstate__`), which trusts them: an object
dtype with an empty list dereferences NULL, and a byte-swapped dtype copies one shared bytes object once per reference.
So no NumPy constructor is reachable from a pickle here. The allow-listed globals (numpy's reconstructor, `ndarray`,
`dtype`) return inert placeholders; an array's state (shape, dtype, order, raw bytes) is checked against the forms
CIFAR-10 files use, and the array is copied out of exactly the right number of bytes with `np.frombuffer`. Archives
re-written under Python 3 at protocol 2 also encode bytes through `_codecs.encode(text, "latin1")`, allowed in that
one form, and empty bytes as `bytes()`, allowed without arguments. Any other global is refused.

What unpickling may build is bounded before it starts: the opcodes are counted first (each builds at most one small
object), and the bytes that arrays and `_codecs.encode` produce may not exceed the pickle's own size, which a
well-formed pickle never needs (each holds its data once) and a pickle reusing one block many times would.
"""

from __future__ import annotations

import _codecs
import io
import math
import pickle
import pickletools
import reprlib

import numpy as np

from cnnlab.common.errors import first_line

MAX_OPCODES = 1_000_000  # an official batch has about 40,000; a Python 3 re-pickle about 100,000
MAX_ARRAY_BYTES = 64 * 2**20  # the official `data` array is 30,720,000 bytes
MAX_ARRAY_DIMS = 4  # official arrays are 2-D; 4 leaves room for re-packs that store NHWC images
# dtype -> the byte order numpy pickles with it. The official data is uint8; little-endian int64 is what
# `np.array(labels)` gives, for re-packed copies that store labels as an array instead of the official list.
ARRAY_DTYPES = {"u1": "|", "i8": "<"}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle holds something CIFAR-10 files never do: a global outside the allow-list, an array form, a size."""


def safe_loads(payload: bytes):
    """Unpickle `payload` (Python 2 str becomes bytes, as the official files expect) with the allow-list.

    Arrays are supported at the top level or as values of a top-level dict, where CIFAR-10 files keep theirs.
    Raises UnsafePickleError for refused content and pickle.UnpicklingError for anything else that fails to load.
    """
    try:
        _check_opcodes(payload)
        unpickler = _AllowListUnpickler(payload)
        return unpickler.resolve_arrays(unpickler.load())
    except pickle.UnpicklingError:
        raise
    # Damaged pickles make the unpickler (and pickletools) raise all of these; the caller gets one error type.
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, RecursionError,
            MemoryError) as exc:
        raise pickle.UnpicklingError(f"{type(exc).__name__}: {first_line(exc)}") from None


def _check_opcodes(payload: bytes) -> None:
    """Walk the opcodes without building anything, to bound what unpickling them can build."""
    for count, (opcode, argument, _) in enumerate(pickletools.genops(payload), start=1):
        if count > MAX_OPCODES:
            raise UnsafePickleError(f"more than {MAX_OPCODES:,} pickle opcodes (CIFAR-10 files have about 40,000)")
        # The C unpickler sizes its memo table by the largest index stored, so one PUT of 2**30 would allocate
        # gigabytes; real pickles number memo entries from 0, at most one per opcode.
        if opcode.name in ("PUT", "LONG_BINPUT") and argument >= MAX_OPCODES:
            raise UnsafePickleError(f"pickle memo index {argument:,} out of range")


def _text(value) -> str | None:
    """A short string argument as str, whether a Python 2 pickle gave it as bytes or a Python 3 one as str."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return value if isinstance(value, str) else None


class _NdarrayType:
    """Stands for `numpy.ndarray` in the reconstructor's arguments; it cannot be called, built or instantiated."""

    __slots__ = ()


_NDARRAY = _NdarrayType()


class _PendingDtype:
    """What `numpy.dtype(...)` gives: only a name from ARRAY_DTYPES, checked again when BUILD sends its state."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, None

    def __setstate__(self, state) -> None:
        if self.dtype is not None or not isinstance(state, tuple) or len(state) != 8:
            raise UnsafePickleError(f"unexpected state for dtype {self.name}")
        version, byte_order, *rest = state
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags): only plain scalar types
        if (version, _text(byte_order), *rest) != (3, ARRAY_DTYPES[self.name], None, None, None, -1, -1, 0):
            raise UnsafePickleError(f"refusing dtype {self.name} with byte order {reprlib.repr(byte_order)} or fields")
        self.dtype = np.dtype(ARRAY_DTYPES[self.name] + self.name)


class _PendingArray:
    """What numpy's reconstructor gives: nothing allocated until BUILD sends a state, which `build` checks."""

    __slots__ = ("build", "array", "resolved")

    def __init__(self, build):
        self.build, self.array, self.resolved = build, None, False

    def __setstate__(self, state) -> None:
        if self.array is not None:
            raise UnsafePickleError("array state given twice")
        self.array = self.build(state)


class _AllowListUnpickler(pickle.Unpickler):
    _GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
        ("numpy", "ndarray"): "_ndarray",
        ("numpy", "dtype"): "_dtype",
        ("_codecs", "encode"): "_latin1_encode",
        # Python 3 pickles empty bytes at protocols 0-2 as `bytes()`; an argument could ask for any size.
        ("__builtin__", "bytes"): "_empty_bytes",
    }

    def __init__(self, payload: bytes):
        super().__init__(io.BytesIO(payload), encoding="bytes")
        self.array_budget = self.text_budget = len(payload)
        self.arrays: list[_PendingArray] = []

    def find_class(self, module: str, name: str):
        try:
            return getattr(self, self._GLOBALS[(module, name)])
        except KeyError:
            raise UnsafePickleError(f"refusing to load global {module}.{name}") from None

    _ndarray = _NDARRAY

    def _reconstruct(self, subtype, shape, typecode) -> _PendingArray:
        # numpy always pickles `_reconstruct(ndarray, (0,), b"b")`; the real shape and type come with the state.
        if subtype is not _NDARRAY or shape != (0,) or _text(typecode) != "b":
            raise UnsafePickleError("refusing numpy array reconstructor with unexpected arguments")
        pending = _PendingArray(self._array_from_state)
        self.arrays.append(pending)
        return pending

    def _dtype(self, name, align, copy) -> _PendingDtype:
        text = _text(name)
        if text not in ARRAY_DTYPES or align is not False or copy is not True:
            allowed = ", ".join(ARRAY_DTYPES)
            raise UnsafePickleError(f"refusing array dtype {reprlib.repr(name)} (CIFAR-10 files hold {allowed})")
        return _PendingDtype(text)

    def _latin1_encode(self, text, encoding) -> bytes:
        if not isinstance(text, str) or encoding != "latin1":
            raise UnsafePickleError(f"refusing _codecs.encode with encoding {reprlib.repr(encoding)}")
        self.text_budget -= len(text)
        if self.text_budget < 0:
            raise UnsafePickleError("_codecs.encode asked for more bytes than the pickle holds")
        return _codecs.encode(text, "latin1")

    @staticmethod
    def _empty_bytes(*arguments) -> bytes:
        if arguments:
            raise UnsafePickleError("refusing bytes() with arguments")
        return b""

    def _array_from_state(self, state) -> np.ndarray:
        if not (isinstance(state, tuple) and len(state) == 5 and type(state[0]) is int and state[0] == 1):
            raise UnsafePickleError("array state is not numpy's (1, shape, dtype, fortran order, data)")
        _, shape, dtype, fortran_order, data = state
        if not isinstance(dtype, _PendingDtype) or dtype.dtype is None:
            raise UnsafePickleError("array state names no checked dtype")
        if not (isinstance(shape, tuple) and len(shape) <= MAX_ARRAY_DIMS
                and all(type(n) is int and n >= 0 for n in shape)):
            raise UnsafePickleError(f"array shape must be at most {MAX_ARRAY_DIMS} non-negative integers")
        if type(fortran_order) is not bool or type(data) is not bytes:
            raise UnsafePickleError("array order must be a bool and its data a bytes object")
        size = math.prod(shape) * dtype.dtype.itemsize
        if size != len(data):
            raise UnsafePickleError(
                f"array of shape {shape} {dtype.name} needs {size:,} bytes; the pickle has {len(data):,}"
            )
        if size > MAX_ARRAY_BYTES:
            raise UnsafePickleError(f"array of {size:,} bytes is over the {MAX_ARRAY_BYTES:,} limit")
        self.array_budget -= size
        if self.array_budget < 0:
            raise UnsafePickleError("arrays total more bytes than the pickle holds (one data block used repeatedly)")
        flat = np.frombuffer(data, dtype.dtype)
        return flat.reshape(shape, order="F" if fortran_order else "C").copy()

    def resolve_arrays(self, loaded):
        """Swap placeholders for their arrays at the top level or as values of a top-level dict; refuse any other."""
        if isinstance(loaded, _PendingArray):
            loaded = self._array_of(loaded)
        elif isinstance(loaded, dict):
            loaded = {key: self._array_of(value) if isinstance(value, _PendingArray) else value
                      for key, value in loaded.items()}
        if not all(pending.resolved for pending in self.arrays):
            raise UnsafePickleError("array nested inside another object (CIFAR-10 files keep arrays in the top dict)")
        return loaded

    @staticmethod
    def _array_of(pending: _PendingArray) -> np.ndarray:
        if pending.array is None:
            raise UnsafePickleError("array without a state")
        pending.resolved = True
        return pending.array
