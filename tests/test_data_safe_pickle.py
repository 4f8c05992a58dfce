import os
import pickle

import numpy as np
import pytest

from cnnlab.data import safe_pickle
from cnnlab.data.safe_pickle import UnsafePickleError, safe_loads
from conftest import ArrayForm, array_state, python2_batch_payload, run_in_limited_child


class RunsACommand:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def safe_loads_in_a_child(payload: bytes) -> str:
    """What safe_loads gives `payload` (the value's type or the error), from a memory-limited child process."""
    script = (
        "import sys\nfrom cnnlab.data.safe_pickle import safe_loads\n"
        "try:\n    print(type(safe_loads(sys.stdin.buffer.read())).__name__)\n"
        "except Exception as exc:\n    print(f'{type(exc).__name__}: {exc}')\n"
    )
    return run_in_limited_child(script, stdin=payload)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4)),
        np.arange(-3, 3, dtype="<i8"),
        np.zeros((0, 3072), np.uint8),
    ],
    ids=["uint8", "fortran-order", "int64", "empty"],
)
def test_numpy_batch_round_trips_as_a_writable_copy(array):
    loaded = safe_loads(pickle.dumps({b"data": array, b"labels": [1, 2, 3]}, protocol=2))
    assert loaded[b"data"].dtype == array.dtype and loaded[b"data"].shape == array.shape
    np.testing.assert_array_equal(loaded[b"data"], array)
    assert loaded[b"data"].flags.writeable and loaded[b"labels"] == [1, 2, 3]


def test_the_official_python2_form_loads():
    payload = python2_batch_payload(images=3)
    loaded = safe_loads(payload)
    expected = pickle.loads(payload, encoding="bytes")  # trusted here: the payload is built above
    assert loaded[b"labels"] == [0, 1, 2] and loaded[b"data"].shape == (3, 3072)
    np.testing.assert_array_equal(loaded[b"data"], expected[b"data"])


def test_payload_that_would_run_a_command_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": RunsACommand(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing to load global (posix|os).system"):
        safe_loads(payload)
    assert not marker.exists()


def test_codecs_encode_is_allowed_only_for_latin1():
    hostile = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aq\x01X\x04\x00\x00\x00zlibq\x02\x86q\x03Rq\x04."
    with pytest.raises(UnsafePickleError, match="encoding 'zlib'"):
        safe_loads(hostile)


def test_an_object_dtype_is_refused_before_numpy_sees_it():
    """numpy's own __setstate__ dereferences NULL on this state: the interpreter dies with a segfault."""
    payload = pickle.dumps({b"data": ArrayForm(array_state((1,), object, []))}, protocol=2)
    assert safe_loads_in_a_child(payload) == "UnsafePickleError: refusing array dtype 'O8' (CIFAR-10 files hold u1, i8)"


def test_a_byte_swapped_array_on_a_shared_block_is_refused_without_copying_it():
    """10,000 byte-swapped arrays on one 1 MiB block: numpy copies the block for each, 10 GiB from a 1.3 MB file."""
    block = bytes(2**20)
    arrays = [ArrayForm(array_state((2**17,), ">i8", block)) for _ in range(10_000)]
    payload = pickle.dumps({b"data": arrays}, protocol=2)
    assert len(payload) < 2 * 2**20
    assert safe_loads_in_a_child(payload).startswith("UnsafePickleError: refusing dtype i8 with byte order '>'")


def test_a_huge_memo_index_is_refused_before_the_unpickler_sizes_its_memo_for_it():
    """The C unpickler allocates (and zeroes) a memo table twice the largest index: 16 GiB for these 9 bytes."""
    payload = b"\x80\x02Nr\xff\xff\xff\x3f."
    assert safe_loads_in_a_child(payload) == "UnsafePickleError: pickle memo index 1,073,741,823 out of range"


def test_one_data_block_cannot_back_more_array_bytes_than_the_pickle_holds():
    block = bytes(1000)
    payload = pickle.dumps({key: ArrayForm(array_state((1000,), np.uint8, block)) for key in "abc"}, protocol=3)
    with pytest.raises(UnsafePickleError, match="arrays total more bytes than the pickle holds"):
        safe_loads(payload)


def test_one_text_cannot_be_encoded_into_more_bytes_than_the_pickle_holds():
    # memo 0: _codecs.encode, 1: a 1,000-character text, 2: "latin1"; then encode that text three times
    text_reused = (b"\x80\x02c_codecs\nencode\nq\x00" + b"X\xe8\x03\x00\x00" + b"a" * 1000 + b"q\x01"
                   + b"X\x06\x00\x00\x00latin1q\x02")
    encode_again = b"h\x00h\x01h\x02\x86R"
    payload = text_reused + b"(" + encode_again * 3 + b"l."
    with pytest.raises(UnsafePickleError, match="_codecs.encode asked for more bytes than the pickle holds"):
        safe_loads(payload)


def test_an_array_over_the_size_cap_is_refused(monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_ARRAY_BYTES", 10)
    with pytest.raises(UnsafePickleError, match="array of 11 bytes is over the 10 limit"):
        safe_loads(pickle.dumps({b"data": np.zeros(11, np.uint8)}, protocol=2))


def test_too_many_opcodes_are_refused_before_unpickling(monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_OPCODES", 100)
    payload = b"\x80\x02(" + b"N" * 200 + b"l."
    with pytest.raises(UnsafePickleError, match="more than 100 pickle opcodes"):
        safe_loads(payload)


REFUSED_ARRAYS = {
    "float32": (ArrayForm(array_state((2,), np.float32, bytes(8))), "refusing array dtype 'f4'"),
    "structured": (ArrayForm(array_state((1,), [("a", "u1")], bytes(1))), "refusing array dtype 'V1'"),
    "big-endian int64": (ArrayForm(array_state((1,), ">i8", bytes(8))), "byte order '>'"),
    "data too short": (ArrayForm(array_state((2, 3), np.uint8, bytes(5))), r"needs 6 bytes; the pickle has 5"),
    "data too long": (ArrayForm(array_state((2, 3), np.uint8, bytes(7))), r"needs 6 bytes; the pickle has 7"),
    "data as a list": (ArrayForm(array_state((2,), np.uint8, [0, 0])), "data a bytes object"),
    "negative shape": (ArrayForm(array_state((-1,), np.uint8, b"")), "non-negative integers"),
    "five dimensions": (ArrayForm(array_state((1,) * 5, np.uint8, b"\0")), "at most 4 non-negative"),
    "claimed huge reconstructor shape": (
        ArrayForm(array_state((3,), np.uint8, b"abc"), arguments=(np.ndarray, (2**30, 2**30), b"b")),
        "reconstructor with unexpected arguments",
    ),
    "nested in a list": ([ArrayForm(array_state((1,), np.uint8, b"a"))], "array nested inside another object"),
    "never built": (ArrayForm(None), "array without a state"),
}


@pytest.mark.parametrize("case", REFUSED_ARRAYS)
def test_arrays_outside_the_official_forms_are_refused(case):
    value, message = REFUSED_ARRAYS[case]
    payload = pickle.dumps({b"data": value}, protocol=2)
    with pytest.raises(UnsafePickleError, match=message):
        safe_loads(payload)


def test_an_array_state_given_twice_is_refused():
    payload = python2_batch_payload(images=1)
    assert payload.endswith(b"tbu.")
    build_twice = payload[: -len(b"tbu.")] + b"tp0\nbg0\nbu."  # memoize the state, BUILD, fetch it, BUILD again
    with pytest.raises(UnsafePickleError, match="array state given twice"):
        safe_loads(build_twice)
