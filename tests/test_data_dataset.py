"""load_dataset: one entry point that asks the table of sources, in order, which one `data.source` names."""

import re

import numpy as np
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.config import DataConfig
from cnnlab.data import Dataset, SourceRecord, image_folder, load_dataset
from cnnlab.data.cifar10 import _sha256_of
from cnnlab.data.sources import SOURCES


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

    monkeypatch.setattr(image_folder, "load_image_folder", load_image_folder)
    return calls


def test_an_archive_is_cifar10_recorded_with_its_sha256(synthetic_archive, folder_source):
    data = load_dataset(DataConfig(source=str(synthetic_archive)), seed=0, warn=quiet)
    record = data.record
    assert (record.kind, record.image_size, record.path) == ("cifar10", 32, str(synthetic_archive.resolve()))
    assert record.content_hash == _sha256_of(synthetic_archive) and record.test_files == ()
    assert data.x_train.shape == (50_000, 32, 32, 3) and data.image_shape == (32, 32, 3) and not folder_source


def test_the_extracted_cifar10_layout_and_its_parent_are_cifar10(synthetic_folder, folder_source):
    for path in (synthetic_folder, synthetic_folder.parent):
        assert load_dataset(DataConfig(source=str(path)), seed=0).record.kind == "cifar10"
    assert not folder_source


def test_any_other_folder_is_an_image_folder_given_the_settings_and_seed(tmp_path, folder_source):
    (tmp_path / "cat").mkdir()
    settings = DataConfig(source=str(tmp_path), image_size=48, test_size=0.25)
    assert load_dataset(settings, seed=7).record.kind == "image_folder"
    assert folder_source == [(tmp_path, settings, 7)]


def test_the_sources_are_asked_in_order_and_the_first_that_recognises_a_path_loads_it(
        synthetic_archive, synthetic_folder, tmp_path, folder_source):
    assert [source.name for source in SOURCES] == ["cifar10", "image_folder"]
    photos = tmp_path / "photos"
    (photos / "cat").mkdir(parents=True)
    recognised = {path: [source.recognises(path) for source in SOURCES]
                  for path in (None, synthetic_archive, synthetic_folder, photos)}
    # The extracted CIFAR-10 layout is a folder, which image folders recognise too: CIFAR-10, asked first, takes it
    assert recognised == {None: [True, False], synthetic_archive: [True, False], synthetic_folder: [True, True],
                          photos: [False, True]}
    for path, kind in ((synthetic_archive, "cifar10"), (synthetic_folder, "cifar10"), (photos, "image_folder")):
        assert load_dataset(DataConfig(source=str(path)), seed=0, warn=quiet).record.kind == kind
    assert folder_source == [(photos, DataConfig(source=str(photos)), 0)]
    with pytest.raises(CnnlabError, match=f"^data path not found: {re.escape(str(tmp_path / 'gone'))}$"):
        load_dataset(DataConfig(source=str(tmp_path / "gone")), seed=0)


def test_each_source_keeps_its_own_rule_and_not_the_others(synthetic_folder, tmp_path, folder_source):
    """CIFAR-10 refuses another image size, from a folder as from an archive; an image folder takes any size, but
    refuses --sha256 before its images are read."""
    cifar10_refusal = ("data.image_size is 64, but CIFAR-10 images are 32 px and are used as they are; for larger "
                       "inputs to a pretrained backbone set --backbone-size instead (it upscales inside its model)")
    with pytest.raises(CnnlabError, match=f"^{re.escape(cifar10_refusal)}$"):
        load_dataset(DataConfig(source=str(synthetic_folder), image_size=64), seed=0)
    photos = tmp_path / "photos"
    (photos / "cat").mkdir(parents=True)
    sized = DataConfig(source=str(photos), image_size=64)
    assert load_dataset(sized, seed=0).record.kind == "image_folder" and folder_source == [(photos, sized, 0)]
    folder_refusal = f"--sha256 checks a CIFAR-10 archive, but {photos} is a folder of images"
    with pytest.raises(CnnlabError, match=f"^{re.escape(folder_refusal)}$"):
        load_dataset(DataConfig(source=str(photos), sha256="0" * 64), seed=0)
    assert len(folder_source) == 1


def test_the_image_shape_is_the_images_height_width_and_channels():
    """Taken from the images, height first as NHWC holds it (both sources make square images; order still counts)."""
    record = SourceRecord("image_folder", "/photos", None, "listing", 40, ("a", "b"))
    images = np.zeros((2, 24, 40, 3), np.uint8)
    shape = Dataset(images, np.zeros(2, np.uint8), images[:1], np.zeros(1, np.uint8), record).image_shape
    assert shape == (24, 40, 3) and all(type(n) is int for n in shape)


@pytest.mark.parametrize("size", [None, 32])
def test_cifar10_at_its_own_size_is_accepted(synthetic_archive, size):
    data = load_dataset(DataConfig(source=str(synthetic_archive), image_size=size), seed=0, warn=quiet)
    assert data.record.image_size == 32


def test_cifar10_at_another_size_is_refused_pointing_to_backbone_size(synthetic_archive):
    with pytest.raises(CnnlabError, match="CIFAR-10 images are 32 px .* set --backbone-size instead"):
        load_dataset(DataConfig(source=str(synthetic_archive), image_size=64), seed=0)


def test_missing_path_is_one_line(tmp_path, folder_source):
    with pytest.raises(CnnlabError, match=f"data path not found: {tmp_path / 'gone'}$"):
        load_dataset(DataConfig(source=str(tmp_path / "gone")), seed=0)


def test_sha256_for_an_image_folder_is_refused(tmp_path, folder_source):
    with pytest.raises(CnnlabError, match="--sha256 checks a CIFAR-10 archive, but .* is a folder of images"):
        load_dataset(DataConfig(source=str(tmp_path), sha256="0" * 64), seed=0)
    assert not folder_source


def test_a_test_limit_keeps_the_same_class_stratified_sample_of_the_test_images(synthetic_archive):
    whole = load_dataset(DataConfig(source=str(synthetic_archive)), seed=0, warn=quiet)
    limited = load_dataset(DataConfig(source=str(synthetic_archive), test_limit=300), seed=0, warn=quiet)
    again = load_dataset(DataConfig(source=str(synthetic_archive), test_limit=300), seed=0, warn=quiet)
    assert np.bincount(limited.y_test).tolist() == [30] * 10
    np.testing.assert_array_equal(limited.x_test, again.x_test)  # the same images every time
    pairs = {(image.tobytes(), label) for image, label in zip(whole.x_test, whole.y_test)}
    assert all((image.tobytes(), label) in pairs for image, label in zip(limited.x_test, limited.y_test))
    assert len(limited.y_train) == 50_000  # training images are not cut
    with pytest.raises(CnnlabError, match=r"^test limit 10001 \(data.test_limit\) exceeds the 10,000 test images$"):
        load_dataset(DataConfig(source=str(synthetic_archive), test_limit=10_001), seed=0, warn=quiet)


def test_a_test_limit_samples_every_class_of_an_image_folder_and_cuts_its_file_list_alike(tmp_path, monkeypatch):
    """An image folder lists its test images class by class: the first N alone would leave classes out."""
    files = tuple(f"{name}/{index}.png" for name in "abc" for index in range(4))

    def load_image_folder(path, data, seed, cache_dir=None, warn=None):
        record = SourceRecord("image_folder", str(path), "listing-hash", "listing", 16, ("a", "b", "c"),
                              test_files=files)
        labels = np.repeat(np.arange(3, dtype=np.uint8), 4)
        images = (labels[:, None, None, None] * 50 + np.arange(12)[:, None, None, None]).astype(np.uint8) * np.ones(
            (1, 16, 16, 3), np.uint8)
        return Dataset(images, labels, images, labels, record)

    monkeypatch.setattr(image_folder, "load_image_folder", load_image_folder)
    limited = load_dataset(DataConfig(source=str(tmp_path), test_limit=6), seed=0, warn=quiet)
    assert limited.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    # the files listed are the images kept: image i of the folder is labelled i // 4 and holds the value 50 * label + i
    kept = [int(image[0, 0, 0]) - 50 * int(label) for image, label in zip(limited.x_test, limited.y_test)]
    assert limited.record.test_files == tuple(files[i] for i in kept)
    assert len(limited.y_train) == 12
