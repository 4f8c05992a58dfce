import pickle
import zipfile

import numpy as np
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.data import cifar10
from cnnlab.data.cifar10 import load_cifar10
from conftest import (CLASS_NAMES, ArrayForm, array_state, batch_payload, meta_payload, run_in_limited_child,
                      write_archive, write_folder)


def warnings_into(messages):
    return messages.append


def test_archive_loads_with_official_shapes_and_nhwc_layout(synthetic_archive, good_files):
    data = load_cifar10(synthetic_archive, warn=lambda message: None)
    assert data.x_train.shape == (50_000, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10_000, 32, 32, 3)
    assert data.y_train.shape == (50_000,) and data.y_test.shape == (10_000,)
    assert data.class_names == tuple(CLASS_NAMES)
    # Row 0 of data_batch_1 is 1024 red, 1024 green, 1024 blue values; pixel (row 0, column 1) is element 1 of each.
    raw = pickle.loads(good_files["data_batch_1"], encoding="bytes")[b"data"][0]
    assert list(data.x_train[0, 0, 1]) == [raw[1], raw[1024 + 1], raw[2048 + 1]]
    assert list(data.x_train[0, 1, 0]) == [raw[32], raw[1024 + 32], raw[2048 + 32]]


def test_unofficial_archive_is_used_with_one_warning(synthetic_archive):
    messages = []
    data = load_cifar10(synthetic_archive, warn=warnings_into(messages))
    assert data.record.hash_status == "unofficial"
    assert len(messages) == 1 and "not the official CIFAR-10 archive" in messages[0] and "\n" not in messages[0]


def test_official_hash_is_recognised_silently(synthetic_archive, monkeypatch):
    digest = cifar10._sha256_of(synthetic_archive)
    monkeypatch.setattr(cifar10, "OFFICIAL_SHA256", digest)
    messages = []
    data = load_cifar10(synthetic_archive, warn=warnings_into(messages))
    assert (data.record.hash_status, data.record.content_hash, messages) == ("official", digest, [])


def test_strict_hash_accepts_a_match_and_refuses_a_mismatch(synthetic_archive):
    digest = cifar10._sha256_of(synthetic_archive)
    assert load_cifar10(synthetic_archive, sha256=digest.upper()).record.hash_status == "matches --sha256"
    with pytest.raises(CnnlabError, match="not the 0000.* given with --sha256"):
        load_cifar10(synthetic_archive, sha256="0" * 64)


def test_extracted_folder_and_its_parent_both_work(synthetic_folder, synthetic_archive):
    from_archive = load_cifar10(synthetic_archive, warn=lambda message: None)
    keys = set()
    for path in (synthetic_folder, synthetic_folder.parent):
        data = load_cifar10(path)
        assert data.record.hash_status == "not checked (folder)" and data.record.kind == "cifar10"
        keys.add(data.record.content_hash)  # of the files' contents, so the same for both
        np.testing.assert_array_equal(data.x_train, from_archive.x_train)
        np.testing.assert_array_equal(data.y_test, from_archive.y_test)
    assert len(keys) == 1 and from_archive.record.content_hash not in keys


def test_sha256_with_a_folder_is_refused(synthetic_folder):
    with pytest.raises(CnnlabError, match="--sha256 checks an archive"):
        load_cifar10(synthetic_folder, sha256="0" * 64)


def test_second_load_comes_from_the_cache(synthetic_archive, tmp_path, monkeypatch):
    first = load_cifar10(synthetic_archive, cache_dir=tmp_path, warn=lambda message: None)
    assert len(list(tmp_path.glob("cifar10-*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(cifar10, "_decode", no_decoding)
    second = load_cifar10(synthetic_archive, cache_dir=tmp_path, warn=lambda message: None)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert second.class_names == first.class_names


def test_damaged_cache_is_rebuilt(synthetic_archive, tmp_path):
    load_cifar10(synthetic_archive, cache_dir=tmp_path, warn=lambda message: None)
    (cache_file,) = tmp_path.glob("cifar10-*.npz")
    cache_file.write_bytes(b"garbage")
    data = load_cifar10(synthetic_archive, cache_dir=tmp_path, warn=lambda message: None)
    assert data.x_train.shape == (50_000, 32, 32, 3)
    assert cache_file.stat().st_size > 100_000_000


def test_unwritable_cache_only_warns(synthetic_archive, tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    messages = []
    data = load_cifar10(synthetic_archive, cache_dir=blocker / "cache", warn=warnings_into(messages))
    assert data.x_train.shape[0] == 50_000
    assert any("could not cache" in message for message in messages)


def test_missing_path():
    with pytest.raises(CnnlabError, match="data path not found: /no/such/cifar"):
        load_cifar10("/no/such/cifar")


def test_download_failure_names_the_offline_fix(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] Temporary failure")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(CnnlabError, match="could not download CIFAR-10 .* give a local copy with --data PATH"):
        load_cifar10(None)


def test_download_uses_keras_get_file_with_the_official_hash(monkeypatch, synthetic_archive):
    import keras

    calls = []

    def fake_get_file(**kwargs):
        calls.append(kwargs)
        return str(synthetic_archive)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    monkeypatch.setattr(cifar10, "OFFICIAL_SHA256", cifar10._sha256_of(synthetic_archive))
    assert load_cifar10(None).record.hash_status == "official"
    assert calls[0]["file_hash"] == cifar10.OFFICIAL_SHA256 and calls[0]["origin"] == cifar10.OFFICIAL_URL


def corrupted(good_files, **changes):
    files = dict(good_files)
    for name, content in changes.items():
        if content is None:
            del files[name]
        else:
            files[name] = content
    return files


BAD_CASES = {
    "missing batch": ({"data_batch_3": None}, "missing data_batch_3"),
    "missing meta": ({"batches.meta": None}, "missing batches.meta"),
    "empty batch": ({"data_batch_2": b""}, "data_batch_2: empty file"),
    "truncated batch": ({"test_batch": batch_payload(9)[:5000]}, "test_batch: truncated or corrupt pickle"),
    "garbage batch": ({"data_batch_1": b"\x80\x02garbage"}, "data_batch_1: truncated or corrupt pickle"),
    "wrong shape": ({"data_batch_4": batch_payload(1, images=9_999)}, "'data' must be uint8 of shape (10000, 3072)"),
    "wrong dtype": ({"data_batch_5": batch_payload(1, images=10, dtype=np.float32)}, "refusing array dtype 'f4'"),
    "labels out of range": (
        {"data_batch_1": batch_payload(1, labels=[10] * 10_000)},
        "labels out of range 0..9",
    ),
    "negative labels": ({"data_batch_1": batch_payload(1, labels=[-1] * 10_000)}, "labels out of range 0..9"),
    "too few labels": ({"data_batch_1": batch_payload(1, labels=[1] * 9_999)}, "'labels' must be 10000 integers"),
    "not a dict": ({"data_batch_1": pickle.dumps([1, 2, 3], protocol=2)}, "expected a dict, found list"),
    "too few class names": ({"batches.meta": meta_payload(CLASS_NAMES[:9])}, "'label_names' must list 10"),
    "class name too long": (
        {"batches.meta": meta_payload(CLASS_NAMES[:9] + ["x" * 65])},
        "class names must be distinct non-empty strings of at most 64 characters",
    ),
    "hostile global": (
        {"data_batch_1": b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."},
        "refusing to load global os.system",
    ),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_data_is_refused_with_a_named_reason(tmp_path, synthetic_folder, case):
    changes, message = BAD_CASES[case]
    good_files = {path.name: path for path in synthetic_folder.iterdir()}
    folder = write_folder(tmp_path / "cifar-10-batches-py", corrupted(good_files, **changes))
    with pytest.raises(CnnlabError) as caught:
        load_cifar10(folder, cache_dir=tmp_path / "cache")
    assert message in str(caught.value)
    assert not list((tmp_path / "cache").glob("*.npz")) if (tmp_path / "cache").exists() else True


def test_bad_archive_member_is_refused(tmp_path, good_files):
    path = write_archive(tmp_path / "bad.tar.gz", corrupted(good_files, data_batch_2=b""))
    with pytest.raises(CnnlabError, match="data_batch_2: empty file"):
        load_cifar10(path, cache_dir=tmp_path / "cache", warn=lambda message: None)


def test_archive_in_another_layout_is_refused(tmp_path, good_files):
    path = write_archive(tmp_path / "flat.tar.gz", {"readme.txt": b"hi"}, folder="")
    with pytest.raises(CnnlabError, match="missing data_batch_1.*official cifar-10-batches-py layout"):
        load_cifar10(path, warn=lambda message: None)


def hard_linked_copy(folder, destination, **changes):
    """`folder`'s files in a new folder `destination` (hard links: no copying), with `changes` written over them."""
    return write_folder(destination, corrupted({path.name: path for path in folder.iterdir()}, **changes))


def test_a_link_leaving_the_folder_is_refused(tmp_path, synthetic_folder):
    folder = hard_linked_copy(synthetic_folder, tmp_path / "cifar-10-batches-py", data_batch_2=None)
    (folder / "data_batch_2").symlink_to(synthetic_folder / "data_batch_2")
    with pytest.raises(CnnlabError, match="data_batch_2: refusing a link to .* outside .*; copy the file into"):
        load_cifar10(folder, cache_dir=tmp_path / "cache")


def test_a_link_within_the_folder_is_followed(tmp_path, synthetic_folder):
    folder = hard_linked_copy(synthetic_folder, tmp_path / "cifar-10-batches-py", test_batch=None)
    (folder / "test_batch").symlink_to("data_batch_1")
    data = load_cifar10(folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(data.x_test, data.x_train[:10_000])


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path, synthetic_folder):
    folder = hard_linked_copy(synthetic_folder, tmp_path / "cifar-10-batches-py", data_batch_3=None)
    with open(folder / "data_batch_3", "wb") as sparse:
        sparse.truncate(100 * 2**30)  # 100 GiB that take no disk
    with pytest.raises(CnnlabError) as caught:
        load_cifar10(folder, cache_dir=tmp_path / "cache")
    limit = "over the 67,108,864 limit for a CIFAR-10 file"
    assert str(caught.value) == f"{folder / 'data_batch_3'}: 107,374,182,400 bytes, {limit}"


@pytest.mark.parametrize(
    "hostile_data, reason",
    [
        # numpy's __setstate__ dereferences NULL on this: the interpreter dies with a segfault
        (ArrayForm(array_state((1,), object, [])), "refusing array dtype 'O8'"),
        # 10,000 byte-swapped arrays on one 1 MiB block: numpy copies the block for each, 10 GiB from a 1.3 MB file
        ([ArrayForm(array_state((2**17,), ">i8", bytes(2**20)))] * 10_000, "refusing dtype i8 with byte order '>'"),
    ],
    ids=["object dtype", "byte-swapped shared block"],
)
def test_crafted_arrays_are_refused_in_one_line_without_crash_or_big_allocation(tmp_path, hostile_data, reason):
    files = {name: b"unread" for name in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")}
    files["batches.meta"] = meta_payload()
    files["data_batch_1"] = pickle.dumps({b"data": hostile_data, b"labels": [0]}, protocol=2)
    folder = write_folder(tmp_path / "cifar-10-batches-py", files)
    script = (
        "import sys\nfrom cnnlab.data.cifar10 import load_cifar10\nfrom cnnlab.common.errors import CnnlabError\n"
        "try:\n    load_cifar10(sys.argv[1], cache_dir=sys.argv[2])\nexcept CnnlabError as exc:\n    print(exc)\n"
    )
    message = run_in_limited_child(script, folder, tmp_path / "cache")
    assert message.startswith(f"{folder}: data_batch_1: {reason}") and "may be malicious" in message
    assert "\n" not in message


class DecodedAgain(Exception):
    """Raised in place of decoding the source: the cache was not used."""


def decoded_again(*args):
    raise DecodedAgain


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory, synthetic_folder):
    """The cache file's name for the synthetic folder (cheaper to re-read than the archive), and its cached arrays."""
    cache_dir = tmp_path_factory.mktemp("good-cache")
    load_cifar10(synthetic_folder, cache_dir=cache_dir)
    (cache_file,) = cache_dir.glob("cifar10-*.npz")
    with np.load(cache_file) as stored:
        return cache_file.name, dict(stored)


def with_one_label(labels, value):
    changed = labels.copy()
    changed[7] = value
    return changed


CACHE_DEFECTS = {
    "label out of range": lambda arrays: {"y_train": with_one_label(arrays["y_train"], 10)},
    "labels not integers": lambda arrays: {"y_test": arrays["y_test"].astype(np.float32)},
    "images not uint8": lambda arrays: {"x_test": arrays["x_test"].astype(np.int16)},
    "nine class names": lambda arrays: {"class_names": arrays["class_names"][:9]},
    "class names not strings": lambda arrays: {"class_names": np.arange(10)},
    "a class name twice": lambda arrays: {"class_names": np.array(["cat"] * 10, dtype=arrays["class_names"].dtype)},
}


@pytest.mark.parametrize("defect", [None, *CACHE_DEFECTS])
def test_a_cache_is_used_only_if_it_holds_exactly_what_load_cifar10_writes(
    tmp_path, synthetic_folder, good_cache, monkeypatch, defect
):
    name, arrays = good_cache
    np.savez(tmp_path / name, **{**arrays, **(CACHE_DEFECTS[defect](arrays) if defect else {})})
    monkeypatch.setattr(cifar10, "_decode", decoded_again)
    if defect is None:  # the control: the same arrays, re-written the same way, are used
        assert load_cifar10(synthetic_folder, cache_dir=tmp_path).x_train.shape[0] == 50_000
    else:
        with pytest.raises(DecodedAgain):
            load_cifar10(synthetic_folder, cache_dir=tmp_path)


def test_a_cache_member_claiming_petabytes_is_ignored_without_allocating(tmp_path, synthetic_folder, good_cache,
                                                                          monkeypatch):
    name, _ = good_cache
    with zipfile.ZipFile(tmp_path / name, "w") as cache, cache.open("x_train.npy", "w") as member:
        header = {"descr": "|u1", "fortran_order": False, "shape": (2**40, 32, 32, 3)}  # 3 PiB, in 128 bytes
        np.lib.format.write_array_header_1_0(member, header)
    monkeypatch.setattr(cifar10, "_decode", decoded_again)
    with pytest.raises(DecodedAgain):
        load_cifar10(synthetic_folder, cache_dir=tmp_path)
