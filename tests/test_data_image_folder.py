"""Image folders as data sets: layouts, what is skipped, every refusal, the cache, the carved test split."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cnnlab.common.errors import CnnlabError
from cnnlab.config import DataConfig
from cnnlab.data import images
from cnnlab.data.image_folder import CHUNK_IMAGES, load_image_folder

# One test and one validation image per class from 3 classes; images are 16 px
SETTINGS = DataConfig(image_size=16, val_size=3, test_size=3)
COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "frog": (0, 0, 255)}
# (file name, mode, save options): every format and several modes the loader must bring to RGB
VARIANTS = [("a.jpg", "RGB", {}), ("b.png", "RGBA", {}), ("c.PNG", "L", {}), ("d.gif", "P", {}),
            ("e.bmp", "RGB", {}), ("f.webp", "RGB", {"lossless": True}), ("g.tiff", "CMYK", {}),
            ("h.tif", "I;16", {}), ("i.JPEG", "L", {})]


def picture(path: Path, colour=(255, 0, 0), size=(20, 12), mode="RGB", **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    (image.convert(mode) if mode != "I;16" else Image.new("I;16", size, 40000)).save(path, **options)
    return path


def class_folder(folder: Path, name: str, count: int = 6) -> None:
    for index in range(count):
        picture(folder / name / f"{index:02}.png", COLOURS.get(name, (9, 9, 9)), size=(20 + index, 12 + index))


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three classes of 6 small PNGs of the class colour, sizes varying."""
    for name in COLOURS:
        class_folder(tmp_path / "photos", name)
    return tmp_path / "photos"


def load(folder: Path, settings=SETTINGS, seed=0, **options):
    warnings = []
    dataset = load_image_folder(folder, settings, seed, warn=warnings.append, **options)
    return dataset, warnings


# Layouts and decoding

def test_class_subfolders_become_classes_and_a_test_split_is_carved(photos):
    dataset, warnings = load(photos)
    assert dataset.class_names == ("cat", "dog", "frog") and warnings == [] and dataset.skipped == ()
    assert dataset.x_train.shape == (15, 16, 16, 3) and dataset.x_test.shape == (3, 16, 16, 3)
    assert dataset.image_shape == (16, 16, 3)
    assert dataset.x_train.dtype == np.uint8 and sorted(dataset.y_test.tolist()) == [0, 1, 2]
    for images_, labels in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        colours = np.array(list(COLOURS.values()))[labels]
        assert np.array_equal(images_[:, 8, 8], colours)  # each image is its class's colour: labels match
    record = dataset.record
    assert (record.kind, record.path, record.hash_status, record.image_size) == (
        "image_folder", str(photos.resolve()), "listing", 16)
    assert len(record.content_hash) == 64 and len(record.test_files) == 3


def test_every_format_and_mode_is_decoded_to_rgb(tmp_path):
    for name in ("colour", "grey"):
        for file, mode, options in VARIANTS:
            picture(tmp_path / name / file, (200, 100, 50), mode=mode, **options)
    dataset, warnings = load(tmp_path, DataConfig(image_size=8, val_size=2, test_size=2))
    assert warnings == [] and len(dataset.x_train) + len(dataset.x_test) == 2 * len(VARIANTS)
    assert dataset.x_train.shape[1:] == (8, 8, 3)


def test_image_size_defaults_to_64_and_sizes_seen_are_reported(photos):
    dataset, _ = load(photos, DataConfig(val_size=3, test_size=3))
    assert dataset.x_train.shape[1:] == (64, 64, 3) and dataset.record.image_size == 64
    sizes = dataset.details["picture sizes"]
    assert sizes.startswith("20-25 x 12-17 px, 6 distinct; most common ")
    assert sizes.count("(3)") == 5  # the five most common, each found once in each of the three classes


@pytest.mark.parametrize("resize, corner", [("pad", [255, 255, 255]), ("crop", [255, 0, 0])])
def test_resize_mode_reaches_the_loader(tmp_path, resize, corner):
    for name in ("a", "b"):
        for index in range(4):
            picture(tmp_path / name / f"{index}.png", (255, 0, 0), size=(40, 10))
    dataset, _ = load(tmp_path, DataConfig(image_size=8, val_size=2, test_size=2, resize=resize))
    assert dataset.x_train[0, 0, 0].tolist() == corner


def test_train_and_test_folders_are_used_as_they_are(tmp_path):
    for name in ("cat", "dog"):
        class_folder(tmp_path / "train", name, 4)
        class_folder(tmp_path / "test", name, 2)
    dataset, _ = load(tmp_path)
    assert len(dataset.x_train) == 8 and len(dataset.x_test) == 4
    assert dataset.record.test_files == ("test/cat/00.png", "test/cat/01.png", "test/dog/00.png", "test/dog/01.png")
    assert dataset.y_test.tolist() == [0, 0, 1, 1]
    assert isinstance(dataset.x_train, np.memmap) and isinstance(dataset.x_test, np.memmap)


def test_subfolders_are_descended_and_hidden_files_ignored(photos):
    picture(photos / "cat" / "2019" / "deep" / "old.jpg", COLOURS["cat"])
    (photos / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photos / "cat" / "._01.png").write_bytes(b"resource fork")
    class_folder(photos / ".ipynb_checkpoints", "cat")
    dataset, warnings = load(photos)
    assert dataset.class_names == ("cat", "dog", "frog") and warnings == []
    assert len(dataset.x_train) + len(dataset.x_test) == 19


def test_a_link_to_a_file_inside_is_followed_a_link_to_a_folder_inside_is_not(photos):
    os.symlink(photos / "cat" / "00.png", photos / "dog" / "linked.png")
    os.symlink(photos / "frog", photos / "cat" / "frogs")
    dataset, _ = load(photos)
    assert len(dataset.x_train) + len(dataset.x_test) == 19


# What is skipped, and strict mode

def test_unreadable_and_non_image_files_are_skipped_with_one_warning(photos):
    (photos / "cat" / "notes.txt").write_text("not a picture")
    (photos / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    whole = picture(photos / "frog" / "whole.png", size=(64, 64)).read_bytes()
    (photos / "frog" / "cut.png").write_bytes(whole[:len(whole) // 2])
    (photos / "README.md").write_text("my photos")
    os.mkfifo(photos / "dog" / "pipe.png")  # never opened: reading it would wait forever
    dataset, warnings = load(photos)
    assert warnings == ["5 files skipped (not readable images): `cnnlab data info` lists them, and a run keeps "
                        "the list in its skipped_files.txt"]
    reasons = dict(dataset.skipped)
    assert set(reasons) == {"cat/notes.txt", "dog/broken.jpg", "frog/cut.png", "README.md", "dog/pipe.png"}
    assert reasons["dog/pipe.png"] == "not a regular file"
    assert reasons["cat/notes.txt"] == "not an image file type" and reasons["README.md"] == "not in a class folder"
    assert reasons["frog/cut.png"].startswith("damaged or truncated image")
    assert reasons["dog/broken.jpg"].startswith(("damaged or truncated image", "not a readable image"))
    assert len(dataset.x_train) + len(dataset.x_test) == 19  # frog/whole.png is the one new image


@pytest.mark.parametrize("bad, message", [("cat/notes.txt", "not an image file type"),
                                          ("dog/broken.jpg", "not a readable image")])
def test_strict_mode_refuses_the_first_skipped_file(photos, bad, message, tmp_path):
    (photos / bad).write_bytes(b"no picture here")
    with pytest.raises(CnnlabError, match=f"{bad}: {message}.*data.strict"):
        load(photos, DataConfig(image_size=16, val_size=3, test_size=3, strict=True), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("image-folder-*"))


# Refusals: one line each, nothing written

def refused(folder: Path, match: str, settings=SETTINGS) -> None:
    cache = folder.parent / "refusal-cache"
    with pytest.raises(CnnlabError, match=match) as error:
        load_image_folder(folder, settings, 0, cache_dir=cache, warn=lambda message: None)
    assert len(str(error.value).splitlines()) == 1
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing cached, no temporary folder left


def test_missing_folder(tmp_path):
    refused(tmp_path / "nowhere", "data folder not found")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"needs a subfolder per class, at least 2 \(found none\)")


def test_one_class(tmp_path):
    class_folder(tmp_path / "photos", "cat")
    refused(tmp_path / "photos", r"at least 2 \(found only cat/\)")


def test_a_class_with_no_image_files(photos):
    (photos / "empty").mkdir()
    refused(photos, r"class 'empty' \(.*/empty/\) has no readable image")


def test_a_class_whose_images_are_all_unreadable(photos):
    (photos / "ghosts").mkdir()
    (photos / "ghosts" / "a.png").write_bytes(b"nothing")
    refused(photos, r"class 'ghosts' .* has no readable image")


def test_a_class_too_small_for_training_validation_and_test(photos):
    class_folder(photos, "newt", 2)  # one to test, one to train, none left for validation
    refused(photos, r"class 'newt' has too few readable images .*\(1, 0, 1 with data.val_size 4 and data.test_size 4\)",
            DataConfig(image_size=16, val_size=4, test_size=4))


def test_a_test_size_that_leaves_nothing_to_train(photos):
    refused(photos, "data.test_size 18 makes a test set of 18 of the 18", DataConfig(image_size=16, test_size=18))


def test_train_and_test_with_different_classes(tmp_path):
    for name in ("cat", "dog"):
        class_folder(tmp_path / "photos" / "train", name, 4)
    for name in ("cat", "frog"):
        class_folder(tmp_path / "photos" / "test", name, 2)
    refused(tmp_path / "photos", r"different classes \(only in train/: dog; only in test/: frog\)")


def test_train_and_test_beside_other_folders(tmp_path):
    for part in ("train", "test", "val"):
        for name in ("cat", "dog"):
            class_folder(tmp_path / "photos" / part, name, 3)
    refused(tmp_path / "photos", "holds train/ and test/, and also val")


@pytest.mark.parametrize("target", ["file", "folder"])
def test_a_link_out_of_the_folder_is_refused(photos, tmp_path, target):
    outside = picture(tmp_path / "elsewhere" / "secret.png")
    os.symlink(outside if target == "file" else outside.parent, photos / "cat" / "link.png")
    refused(photos, r"refusing a link to .*elsewhere.*, outside the data folder")


def test_a_name_that_is_not_utf8_is_refused(photos):
    Path(os.fsdecode(os.fsencode(photos / "cat") + b"/caf\xe9.png")).write_bytes(b"")
    refused(photos, r"cat/caf\\xe9.png: the name is not valid UTF-8; rename it")


def test_an_image_over_the_pixel_limit_is_refused(photos, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 30 * 30)
    picture(photos / "dog" / "huge.png", size=(40, 40))
    refused(photos, "40x40 pixels is over the 900-pixel limit")


def test_an_unwritable_cache_is_one_line(photos, tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    with pytest.raises(CnnlabError, match="cannot write decoded images to .*CNNLAB_CACHE"):
        load_image_folder(photos, SETTINGS, 0, cache_dir=blocked / "cache")


# The carved test split

def test_the_same_listing_and_seed_give_the_same_split(photos, tmp_path):
    first, _ = load(photos, seed=7)
    copy = shutil.copytree(photos, tmp_path / "copy")  # another listing (times differ), same names: same split
    again, _ = load(copy, seed=7, cache_dir=tmp_path / "fresh-cache")
    assert first.record.test_files == again.record.test_files
    assert np.array_equal(first.x_test, again.x_test) and np.array_equal(first.y_train, again.y_train)
    other, _ = load(photos, seed=8)
    assert other.record.test_files != first.record.test_files


def test_test_images_are_never_training_images(tmp_path):
    for name in ("a", "b"):
        for index in range(10):  # every image a distinct grey, so an image can be found by its pixels
            picture(tmp_path / name / f"{index}.png", (index * 20 + (name == "b") * 7,) * 3)
    dataset, _ = load(tmp_path, DataConfig(image_size=8, val_size=2, test_size=0.3))
    train, test = {tuple(x[4, 4]) for x in dataset.x_train}, {tuple(x[4, 4]) for x in dataset.x_test}
    assert len(test) == 6 and len(train) == 14 and not train & test
    recorded = {int(Path(name).stem) * 20 + (name.startswith("b")) * 7 for name in dataset.record.test_files}
    assert recorded == {value for value, _, _ in test}  # test_files names the test images, in x_test's order
    assert [int(Path(n).stem) * 20 + n.startswith("b") * 7 for n in dataset.record.test_files] == [
        int(x[4, 4, 0]) for x in dataset.x_test]


# The cache

def test_second_load_reads_the_cache_memory_mapped(photos, monkeypatch):
    first, _ = load(photos)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "decode_image", no_decoding)
    again, _ = load(photos)
    assert isinstance(again.x_train, np.memmap) and isinstance(again.x_test, np.memmap)
    assert np.array_equal(first.x_train, again.x_train) and first.record == again.record


@pytest.mark.parametrize("change", ["touch", "add", "remove"])
def test_any_change_to_the_files_invalidates_the_cache(photos, monkeypatch, change):
    first, _ = load(photos)
    decoded = []
    real = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *args: decoded.append(args) or real(*args))
    if change == "touch":
        os.utime(photos / "cat" / "00.png", ns=(1, 1))
    elif change == "add":
        picture(photos / "cat" / "new.png")
    else:
        (photos / "cat" / "00.png").unlink()
    again, _ = load(photos)
    assert decoded and again.record.content_hash != first.record.content_hash


def test_a_damaged_cache_is_rebuilt(photos, tmp_path):
    cache = tmp_path / "cache"
    first, _ = load(photos, cache_dir=cache)
    (entry,) = cache.glob("image-folder-*")
    (entry / "images.npy").write_bytes((entry / "images.npy").read_bytes()[:200])
    (entry / "meta.json").write_text('{"kept": [0], "unreadable": [], "sizes": []}')
    again, _ = load(photos, cache_dir=cache)
    assert np.array_equal(first.x_train, again.x_train)


def test_decoding_uses_worker_processes_for_more_than_one_chunk(tmp_path):
    for name in ("a", "b"):
        for index in range(CHUNK_IMAGES // 2 + 3):
            picture(tmp_path / name / f"{index}.png", (index, 0, 0), size=(8, 8))
    (tmp_path / "a" / "bad.png").write_bytes(b"not an image")
    dataset, warnings = load(tmp_path, DataConfig(image_size=8, val_size=2, test_size=2))
    assert len(dataset.x_train) + len(dataset.x_test) == CHUNK_IMAGES + 6 and len(warnings) == 1
    assert sorted(np.concatenate([dataset.x_train, dataset.x_test])[:, 0, 0, 0].tolist()) == sorted(
        list(range(CHUNK_IMAGES // 2 + 3)) * 2)


# Fuzzing: any tree of small files is a Dataset or one CnnlabError line

NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=8)
SUFFIX = st.sampled_from([".png", ".jpg", ".GIF", ".txt", ".tif", ""])


@st.composite
def trees(draw) -> dict[tuple[str, ...], bytes]:
    valid = picture_bytes()
    files = {}
    for _ in range(draw(st.integers(0, 14))):
        parts = tuple(draw(st.lists(NAME.filter(lambda n: n not in (".", "..")), min_size=1, max_size=3)))
        content = draw(st.sampled_from([valid, valid[:40], b""]) | st.binary(max_size=64))
        files[parts[:-1] + (parts[-1] + draw(SUFFIX),)] = content
    return files


def picture_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (9, 7), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@given(tree=trees(), seed=st.integers(0, 3), val_size=st.sampled_from([0, 1, 0.5]))
def test_fuzz_any_folder_tree(tmp_path_factory, tree, seed, val_size):
    folder = tmp_path_factory.mktemp("tree")
    for parts, content in tree.items():
        path = folder.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        except OSError:  # a name already used as a file, or one the filesystem refuses: not part of this tree
            continue
    try:
        dataset = load_image_folder(folder, DataConfig(image_size=8, val_size=val_size, test_size=1), seed,
                                    cache_dir=folder.parent / f"{folder.name}-cache", warn=lambda message: None)
    except CnnlabError as error:
        assert len(str(error).splitlines()) == 1
    else:
        assert len(dataset.x_train) >= len(dataset.class_names) >= 2


def test_a_class_folder_name_over_64_characters_is_refused(tmp_path):
    """One rule for every source: CIFAR-10's meta names and a folder's class names alike, at most 64 characters."""
    for length in (64, 65):
        folder = tmp_path / str(length)
        class_folder(folder, "cat")
        class_folder(folder, "x" * length)
        if length == 64:
            assert "x" * 64 in load(folder)[0].class_names
        else:
            with pytest.raises(CnnlabError, match="its name has 65 characters, over the 64 a class name may have"):
                load(folder)


def test_a_cache_disk_too_full_for_the_decoded_images_is_one_line_and_leaves_nothing(photos, tmp_path, monkeypatch):
    """The decoded images go to a memory-mapped file. Writing through a map to a file the disk cannot back killed
    the process with SIGBUS (exit 135, nothing said, a .tmp-* folder left behind); the file's space is now reserved
    first, so a full disk is an error like any other (here the reservation is made to fail, as root may write
    anywhere and a real full disk cannot be had in a test)."""
    import errno
    import os

    def no_space(descriptor, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(CnnlabError, match="cannot write decoded images to .*No space left on device.*free some space"):
        load_image_folder(photos, SETTINGS, 0, cache_dir=cache, warn=lambda message: None)
    assert not list(cache.rglob(".tmp-*"))
    monkeypatch.undo()
    assert len(load_image_folder(photos, SETTINGS, 0, cache_dir=cache, warn=lambda message: None).class_names) == 3
