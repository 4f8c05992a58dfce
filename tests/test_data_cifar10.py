import pickle

import numpy as np
import pytest

from cnnlab.data import cifar10
from cnnlab.data.cifar10 import load_cifar10
from cnnlab.errors import CnnlabError
from conftest import CLASS_NAMES, batch_payload, meta_payload, write_archive, write_folder


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
    assert data.hash_status == "unofficial"
    assert len(messages) == 1 and "not the official CIFAR-10 archive" in messages[0] and "\n" not in messages[0]


def test_official_hash_is_recognised_silently(synthetic_archive, monkeypatch):
    digest = cifar10._sha256_of(synthetic_archive)
    monkeypatch.setattr(cifar10, "OFFICIAL_SHA256", digest)
    messages = []
    data = load_cifar10(synthetic_archive, warn=warnings_into(messages))
    assert (data.hash_status, data.sha256, messages) == ("official", digest, [])


def test_strict_hash_accepts_a_match_and_refuses_a_mismatch(synthetic_archive):
    digest = cifar10._sha256_of(synthetic_archive)
    assert load_cifar10(synthetic_archive, sha256=digest.upper()).hash_status == "matches --sha256"
    with pytest.raises(CnnlabError, match="not the 0000.* given with --sha256"):
        load_cifar10(synthetic_archive, sha256="0" * 64)


def test_extracted_folder_and_its_parent_both_work(synthetic_folder, synthetic_archive):
    from_archive = load_cifar10(synthetic_archive, warn=lambda message: None)
    for path in (synthetic_folder, synthetic_folder.parent):
        data = load_cifar10(path)
        assert data.hash_status == "not checked (folder)" and data.sha256 is None
        np.testing.assert_array_equal(data.x_train, from_archive.x_train)
        np.testing.assert_array_equal(data.y_test, from_archive.y_test)


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
    assert load_cifar10(None).hash_status == "official"
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
    "wrong dtype": ({"data_batch_5": batch_payload(1, dtype=np.float32)}, "found float32"),
    "labels out of range": (
        {"data_batch_1": batch_payload(1, labels=[10] * 10_000)},
        "labels out of range 0..9",
    ),
    "negative labels": ({"data_batch_1": batch_payload(1, labels=[-1] * 10_000)}, "labels out of range 0..9"),
    "too few labels": ({"data_batch_1": batch_payload(1, labels=[1] * 9_999)}, "'labels' must be 10000 integers"),
    "not a dict": ({"data_batch_1": pickle.dumps([1, 2, 3], protocol=2)}, "expected a dict, found list"),
    "too few class names": ({"batches.meta": meta_payload(CLASS_NAMES[:9])}, "'label_names' must list 10"),
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
