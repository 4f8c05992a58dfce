"""Property-based fuzzing of every parser of outside input in cnnlab.data: the unpickler (directly and through
`load_cifar10` on a folder) and the archive reader. Whatever the bytes, each returns or raises its documented error
(pickle.UnpicklingError from safe_loads, CnnlabError from read_tar_members and load_cifar10), never anything else.
Payloads are small, so no example can take long or allocate much. `HYPOTHESIS_PROFILE=long` runs 5,000 examples each.
"""

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from cnnlab.common.errors import CnnlabError
from cnnlab.data.archive import read_tar_members
from cnnlab.data.cifar10 import BATCH_FILES, load_cifar10
from cnnlab.data.safe_pickle import UnsafePickleError, safe_loads
from conftest import batch_payload, meta_payload, python2_batch_payload, write_folder

# ---------------------------------------------------------------------------------------------------------------------
# safe_loads


def loads_or_refuses(payload: bytes) -> None:
    try:
        safe_loads(payload)
    except pickle.UnpicklingError:
        pass


@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda tail: b"\x80\x02" + tail)))
def test_fuzz_arbitrary_bytes(payload):
    loads_or_refuses(payload)


MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 2**20), st.integers(1, 255))


def mutate(payload: bytes, mutations) -> bytes:
    data = bytearray(payload)
    for kind, position, value in mutations:
        position %= len(data) + 1
        if kind == "insert":
            data.insert(position, value)
        elif position < len(data):
            if kind == "flip":
                data[position] ^= value
            else:
                del data[position]
    return bytes(data)


VALID_BATCHES = [batch_payload(0, images=4), python2_batch_payload(images=4)]


@given(st.sampled_from(VALID_BATCHES), st.lists(MUTATION, min_size=1, max_size=8))
def test_fuzz_mutated_batches(payload, mutations):
    loads_or_refuses(mutate(payload, mutations))


@given(st.sampled_from(VALID_BATCHES), st.integers(0, 20_000))
def test_fuzz_truncated_batches(payload, length):
    loads_or_refuses(payload[:length])


PLAIN_OBJECTS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**100), 2**100) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5) | st.integers(), children, max_size=4),
    max_leaves=20,
)


@given(PLAIN_OBJECTS, st.integers(0, 5))
def test_fuzz_plain_objects_round_trip_at_every_protocol(value, protocol):
    assert safe_loads(pickle.dumps(value, protocol=protocol)) == value


ANY_SCALAR_DTYPE = st.one_of(npst.integer_dtypes(), npst.unsigned_integer_dtypes(), npst.floating_dtypes(),
                             npst.complex_number_dtypes(), npst.boolean_dtypes())


@given(npst.arrays(ANY_SCALAR_DTYPE, npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
       st.booleans(), st.integers(0, 4))
def test_fuzz_arrays_load_exactly_when_their_dtype_is_an_official_one(array, fortran_order, protocol):
    array = np.asfortranarray(array) if fortran_order else array
    payload = pickle.dumps({b"data": array}, protocol=protocol)
    if array.dtype.str in ("|u1", "<i8"):
        loaded = safe_loads(payload)[b"data"]
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
    else:
        with pytest.raises(UnsafePickleError, match="dtype"):
            safe_loads(payload)


# ---------------------------------------------------------------------------------------------------------------------
# load_cifar10 on a folder: the fuzzed file is one member of an otherwise-valid folder whose other batches are empty,
# so every example ends in a CnnlabError quickly, after the fuzzed file has been parsed and checked.


def load_folder_with(tmp_path, name: str, content: bytes) -> None:
    files = {batch: b"" for batch in BATCH_FILES} | {"batches.meta": meta_payload(), name: content}
    folder = write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(CnnlabError) as caught:
        load_cifar10(folder, cache_dir=tmp_path / "cache")
    assert "\n" not in str(caught.value)


@given(st.lists(MUTATION, min_size=1, max_size=8))
def test_fuzz_load_cifar10_with_a_mutated_meta_file(tmp_path, mutations):
    load_folder_with(tmp_path, "batches.meta", mutate(meta_payload(), mutations))


@given(st.sampled_from(VALID_BATCHES), st.lists(MUTATION, min_size=1, max_size=8))
def test_fuzz_load_cifar10_with_a_mutated_batch(tmp_path, payload, mutations):
    load_folder_with(tmp_path, "data_batch_1", mutate(payload, mutations))


KEYS = st.sampled_from([b"data", b"labels", b"label_names", "data", "labels"]) | st.text(max_size=5) | st.integers()
VALUES = PLAIN_OBJECTS | npst.arrays(st.sampled_from(["|u1", "<i8"]), npst.array_shapes(max_dims=2, max_side=6))


@given(st.sampled_from(["batches.meta", "data_batch_1"]), st.dictionaries(KEYS, VALUES, max_size=4), st.integers(0, 5))
def test_fuzz_load_cifar10_with_a_pickled_dict_of_anything(tmp_path, name, fields, protocol):
    load_folder_with(tmp_path, name, pickle.dumps(fields, protocol=protocol))


# ---------------------------------------------------------------------------------------------------------------------
# read_tar_members


def small_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in [("top/one", b"1" * 700), ("top/two", b"22"), ("other/one", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        folder = tarfile.TarInfo("top/sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return buffer.getvalue()


SMALL_TAR = small_tar()


def reads_or_refuses(tmp_path, archive_bytes: bytes) -> None:
    path = tmp_path / "fuzzed.tar.gz"
    path.write_bytes(archive_bytes)
    try:
        found = read_tar_members(path, "top", {"one", "two"})
    except CnnlabError as error:
        assert "\n" not in str(error)
    else:
        assert set(found) <= {"one", "two"} and all(isinstance(content, bytes) for content in found.values())


@given(st.one_of(st.binary(max_size=2000), st.binary(max_size=2000).map(lambda tail: b"\x1f\x8b\x08" + tail)))
def test_fuzz_read_tar_members_with_garbage(tmp_path, archive_bytes):
    reads_or_refuses(tmp_path, archive_bytes)


@given(st.lists(MUTATION, min_size=1, max_size=8))
def test_fuzz_read_tar_members_with_a_mutated_gzip(tmp_path, mutations):
    reads_or_refuses(tmp_path, mutate(gzip.compress(SMALL_TAR, mtime=0), mutations))


@given(st.lists(MUTATION, min_size=1, max_size=8))
def test_fuzz_read_tar_members_with_a_mutated_tar_inside_a_valid_gzip(tmp_path, mutations):
    reads_or_refuses(tmp_path, gzip.compress(mutate(SMALL_TAR, mutations), mtime=0))


PAX_KEYS = st.sampled_from(["path", "linkpath", "size", "mtime", "uid", "uname", "hdrcharset", "GNU.sparse.map",
                            "GNU.sparse.major", "GNU.sparse.minor", "GNU.sparse.size", "GNU.sparse.realsize",
                            "GNU.sparse.name", "GNU.sparse.offset", "GNU.sparse.numbytes"]) | st.text(max_size=8)
PAX_VALUES = st.text(alphabet="0123456789,-.x /", max_size=12) | st.text(st.characters(codec="utf-8"), max_size=12)


@given(st.dictionaries(PAX_KEYS.filter(lambda key: key and "=" not in key), PAX_VALUES, max_size=5))
def test_fuzz_read_tar_members_with_arbitrary_pax_headers(tmp_path, pax_headers):
    """PAX headers are where tarfile parses numbers and names out of text; byte mutations rarely form one."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("top/one")
        info.size, info.pax_headers = 3, pax_headers
        tar.addfile(info, io.BytesIO(b"abc"))
    reads_or_refuses(tmp_path, gzip.compress(buffer.getvalue(), mtime=0))
