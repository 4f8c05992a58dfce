"""load_dataset: one entry point that picks the source from what `data.source` names."""

import sys
import types

import numpy as np
import pytest

from cnnlab.config import DataConfig
from cnnlab.data import Dataset, SourceRecord, load_dataset
from cnnlab.data.cifar10 import _sha256_of
from cnnlab.errors import CnnlabError


def quiet(message):
    pass


@pytest.fixture
def folder_source(monkeypatch):
    """A stand-in for the image-folder source that records how it was called: dispatch is what is tested here."""
    calls = []

    def load_image_folder(path, data, seed, cache_dir=None, warn=None):
        calls.append((path, data, seed))
        record = SourceRecord("image_folder", str(path), "listing-hash", "listing", 64, ("a", "b"))
        empty = np.zeros((0, 64, 64, 3), np.uint8)
        return Dataset(empty, np.zeros(0, np.uint8), empty, np.zeros(0, np.uint8), record)

    stand_in = types.SimpleNamespace(load_image_folder=load_image_folder)
    monkeypatch.setitem(sys.modules, "cnnlab.data.image_folder", stand_in)
    return calls


def test_an_archive_is_cifar10_recorded_with_its_sha256(synthetic_archive, folder_source):
    data = load_dataset(DataConfig(source=str(synthetic_archive)), seed=0, warn=quiet)
    record = data.record
    assert (record.kind, record.image_size, record.path) == ("cifar10", 32, str(synthetic_archive.resolve()))
    assert record.content_hash == _sha256_of(synthetic_archive) and record.test_files == ()
    assert data.x_train.shape == (50_000, 32, 32, 3) and not folder_source


def test_the_extracted_cifar10_layout_and_its_parent_are_cifar10(synthetic_folder, folder_source):
    for path in (synthetic_folder, synthetic_folder.parent):
        assert load_dataset(DataConfig(source=str(path)), seed=0).record.kind == "cifar10"
    assert not folder_source


def test_any_other_folder_is_an_image_folder_given_the_settings_and_seed(tmp_path, folder_source):
    (tmp_path / "cat").mkdir()
    settings = DataConfig(source=str(tmp_path), image_size=48, test_size=0.25)
    assert load_dataset(settings, seed=7).record.kind == "image_folder"
    assert folder_source == [(tmp_path, settings, 7)]


@pytest.mark.parametrize("size", [None, 32])
def test_cifar10_at_its_own_size_is_accepted(synthetic_archive, size):
    data = load_dataset(DataConfig(source=str(synthetic_archive), image_size=size), seed=0, warn=quiet)
    assert data.record.image_size == 32


def test_cifar10_at_another_size_is_refused_pointing_to_vgg16_size(synthetic_archive):
    with pytest.raises(CnnlabError, match="CIFAR-10 images are 32 px .* set --vgg16-size instead"):
        load_dataset(DataConfig(source=str(synthetic_archive), image_size=64), seed=0)


def test_missing_path_is_one_line(tmp_path, folder_source):
    with pytest.raises(CnnlabError, match=f"data path not found: {tmp_path / 'gone'}$"):
        load_dataset(DataConfig(source=str(tmp_path / "gone")), seed=0)


def test_sha256_for_an_image_folder_is_refused(tmp_path, folder_source):
    with pytest.raises(CnnlabError, match="--sha256 checks a CIFAR-10 archive, but .* is a folder of images"):
        load_dataset(DataConfig(source=str(tmp_path), sha256="0" * 64), seed=0)
    assert not folder_source


def test_a_test_limit_keeps_the_first_test_images(synthetic_archive):
    whole = load_dataset(DataConfig(source=str(synthetic_archive)), seed=0, warn=quiet)
    limited = load_dataset(DataConfig(source=str(synthetic_archive), test_limit=300), seed=0, warn=quiet)
    np.testing.assert_array_equal(limited.x_test, whole.x_test[:300])
    np.testing.assert_array_equal(limited.y_test, whole.y_test[:300])
    assert len(limited.y_train) == 50_000  # training images are not cut
    with pytest.raises(CnnlabError, match="^test limit 10001 exceeds the 10,000 test images$"):
        load_dataset(DataConfig(source=str(synthetic_archive), test_limit=10_001), seed=0, warn=quiet)


def test_a_test_limit_cuts_an_image_folders_list_of_test_files_alike(tmp_path, monkeypatch):
    def load_image_folder(path, data, seed, cache_dir=None, warn=None):
        record = SourceRecord("image_folder", str(path), "listing-hash", "listing", 16, ("a", "b"),
                              test_files=("a/1.png", "b/2.png", "a/3.png"))
        images = np.arange(3 * 16 * 16 * 3, dtype=np.uint8).reshape(3, 16, 16, 3)
        return Dataset(images, np.array([0, 1, 0], np.uint8), images, np.array([0, 1, 0], np.uint8), record)

    monkeypatch.setitem(sys.modules, "cnnlab.data.image_folder", types.SimpleNamespace(load_image_folder=load_image_folder))
    limited = load_dataset(DataConfig(source=str(tmp_path), test_limit=2), seed=0, warn=quiet)
    assert limited.record.test_files == ("a/1.png", "b/2.png") and limited.y_test.tolist() == [0, 1]
    assert len(limited.y_train) == 3
