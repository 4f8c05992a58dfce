"""Your own images, end to end: a folder of class subfolders through every command, each in a fresh `python -m cnnlab`
process, on every model kind a command accepts.

The folder is built here: three classes that differ in colour and texture (blue stripes, green checks, red noise),
40 pictures each, of mixed sizes, colour modes and file formats, plus one damaged file. A tiny CNN and a tiny fast net
learn them in a few epochs; VGG16 from random weights does not learn them that fast, so its answers are checked
against its own recorded ones.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import (TINY_MODEL, TINY_VGG16, assert_evaluate_reproduces_the_recorded_scores, run_cnnlab,
                      run_metrics)

pytestmark = pytest.mark.slow

CLASSES = ("blue", "green", "red")  # folder names, sorted: the labels 0, 1, 2
COLOURS = {"blue": (40, 70, 215), "green": (45, 175, 60), "red": (205, 45, 40)}
PER_CLASS = 40
# (suffix, Pillow mode) in turn: every allowed format, palette, transparency and CMYK among them
FORMATS = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("gif", "P"), ("webp", "RGB"), ("tiff", "RGB"),
           ("png", "RGBA"), ("jpg", "CMYK"), ("png", "P"), ("tif", "RGBA")]
BROKEN = "red/broken.png"  # a PNG cut short: unreadable, skipped with a warning
SIZE = ["--image-size", "32"]
CNN_EPOCHS = 10
KINDS = {
    "cnn": ["--preset", "seed", *TINY_MODEL, "--epochs", CNN_EPOCHS, "--batch-size", "16"],
    # The scratch recipe (Adam) at a higher peak rate: the fast preset's SGD is tuned for batches of 1,024
    "fastnet": ["--preset", "scratch", "--set", "fastnet.widths=[8, 16, 16]", "--epochs", "8", "--lr", "0.01",
                "--batch-size", "16"],
    "vgg16": ["--preset", "seed", "--model", "vgg16", *TINY_VGG16, "--epochs", "1", "--batch-size", "16"],
}
LEARNERS = ("cnn", "fastnet")  # the kinds that learn this folder in the few epochs given


def picture(name, width, height, rng):
    """A picture of class `name`: its colour, its texture, some noise."""
    rows, cols = np.mgrid[:height, :width]
    texture = {"blue": (rows // 4) % 2, "green": ((rows // 6) + (cols // 6)) % 2,
               "red": rng.integers(0, 2, (height, width))}[name]
    pixels = np.array(COLOURS[name]) + 30 * texture[..., None] + rng.integers(-15, 15, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def save(image, path, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        image = image.quantize(64)
    elif mode == "RGBA":
        image = image.convert("RGBA")  # opaque: transparency would show white, another colour
    elif mode == "CMYK":
        image = image.convert("CMYK")
    image.save(path)


def write_class_folders(root, counts, seed):
    """`counts[name]` pictures of each class in root/<name>/, sizes and formats mixed."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        for index in range(counts[name]):
            suffix, mode = FORMATS[index % len(FORMATS)]
            width, height = rng.integers(20, 97, 2)
            save(picture(name, int(width), int(height), rng), root / name / f"{name}{index:03d}.{suffix}", mode)
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = write_class_folders(tmp_path_factory.mktemp("photos") / "photos", dict.fromkeys(CLASSES, PER_CLASS), 0)
    (root / BROKEN).write_bytes((root / "red" / "red000.png").read_bytes()[:100])
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, photos):
    """One finished run of each model kind on the folder, trained by `python -m cnnlab train`."""
    root = tmp_path_factory.mktemp("folder-runs")
    for kind, arguments in KINDS.items():
        done = run_cnnlab("train", "--data", photos, *SIZE, *arguments, "--out", root / kind)
        assert done.returncode == 0, done.stderr
        assert "1 file skipped (not readable images)" in done.stderr
    return {kind: root / kind for kind in KINDS}


def test_data_info_counts_every_readable_picture_per_class_and_split(photos, runs):
    done = run_cnnlab("data", "info", "--data", photos, *SIZE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"skipped: 1 file(s)" in lines and any(line.strip().startswith(f"{BROKEN}:") for line in lines)
    table = {line.split()[0]: [int(count) for count in line.split()[1:]] for line in lines[lines.index(
        next(line for line in lines if line.split()[:4] == ["class", "train", "val", "test"])) + 1:]}
    readable = {"blue": PER_CLASS, "green": PER_CLASS, "red": PER_CLASS}  # the broken file is not one of them
    for name in CLASSES:
        assert sum(table[name]) == readable[name]
    assert table["total"] == [sum(column) for column in zip(*(table[name] for name in CLASSES))]
    # The same test set as `train` carved with the same seed and settings, file for file.
    test_files = (runs["cnn"] / "test_files.txt").read_text().splitlines()
    assert table["total"][2] == len(test_files) == round(0.2 * sum(readable.values()))
    assert [sum(file.startswith(f"{name}/") for file in test_files) for name in CLASSES] == [
        table[name][2] for name in CLASSES]


@pytest.mark.parametrize("kind", list(KINDS))
def test_training_records_the_folder_its_classes_and_what_it_skipped(runs, photos, kind):
    record = run_metrics(runs[kind])["data"]
    assert record["classes"] == list(CLASSES) and record["kind"] == "image_folder"
    assert record["image_size"] == 32 and record["path"] == str(photos.resolve())
    assert (runs[kind] / "skipped_files.txt").read_text().startswith(f"{BROKEN}: ")
    test_files = (runs[kind] / "test_files.txt").read_text().splitlines()
    assert BROKEN not in test_files and all((photos / name).is_file() for name in test_files)
    assert len(np.load(runs[kind] / "test_predictions.npz")["labels"]) == len(test_files)


@pytest.mark.parametrize("kind", LEARNERS)
def test_the_small_models_learn_the_folder(runs, kind):
    assert run_metrics(runs[kind])["test_accuracy"] >= 0.9


@pytest.mark.parametrize("kind", list(KINDS))
def test_evaluate_rescores_the_recorded_test_pictures_to_the_same_accuracy(runs, kind):
    assert_evaluate_reproduces_the_recorded_scores(runs[kind])


@pytest.mark.parametrize("kind", list(KINDS))
def test_predict_on_the_test_pictures_gives_the_runs_own_answers(runs, photos, kind):
    # predict reads each file as training did (the run's size and resize mode): its answers are the test set's.
    test_files = (runs[kind] / "test_files.txt").read_text().splitlines()[:6]
    probabilities = np.load(runs[kind] / "test_predictions.npz")["probabilities"].astype(float)
    done = run_cnnlab("predict", runs[kind], "--json", *(photos / name for name in test_files))
    assert done.returncode == 0, done.stderr
    for row, answer in zip(probabilities, json.loads(done.stdout)):
        assert answer["top"][0]["class"] == CLASSES[int(np.argmax(row))]
        assert answer["top"][0]["probability"] == pytest.approx(row.max(), abs=0.01)


def predicted_classes(run_dir, paths):
    done = run_cnnlab("predict", run_dir, "--json", *paths)
    assert done.returncode == 0, done.stderr
    return [answer["top"][0]["class"] for answer in json.loads(done.stdout)]


@pytest.mark.parametrize("kind", LEARNERS)
def test_predict_names_the_class_of_a_clear_picture(runs, tmp_path, kind):
    rng = np.random.default_rng(1)
    paths = [tmp_path / f"clear-{name}.png" for name in CLASSES]
    for name, path in zip(CLASSES, paths):
        picture(name, 80, 80, rng).save(path)
    assert predicted_classes(runs[kind], paths) == list(CLASSES)


def test_predict_crops_a_wide_picture_as_the_run_did(runs, tmp_path):
    # Green in the centre square, red on both sides (two thirds of it). The run's resize mode (the default, "crop")
    # shows the model only the green; stretched, as predict once read every picture, the CNN answered red (83%).
    # (The fast net's global max pooling finds the green centre either way, so it cannot tell the modes apart.)
    rng = np.random.default_rng(1)
    wide = picture("red", 150, 50, rng)
    wide.paste(picture("green", 50, 50, rng), (50, 0))
    wide.save(tmp_path / "wide.png")
    assert json.loads((runs["cnn"] / "config.json").read_text())["data"]["resize"] == "crop"
    assert predicted_classes(runs["cnn"], [tmp_path / "wide.png"]) == ["green"]


def test_report_compares_the_three_runs(runs, tmp_path):
    done = run_cnnlab("report", *runs.values(), "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert markdown.startswith("# cnnlab comparison: CNN from scratch vs fast net from scratch vs VGG16 to block 2 from scratch")
    for run_dir in runs.values():
        assert f"{run_metrics(run_dir)['test_accuracy']:.2%}" in markdown


def test_compare_runs_the_tutorial_comparison_on_the_folder(photos, tmp_path):
    out = tmp_path / "both"
    done = run_cnnlab("compare", "--models", "cnn,vgg16", "--preset", "quick", "--data", photos, *SIZE, "--epochs", "1", *TINY_MODEL,
                      *TINY_VGG16, "--out", out)
    assert done.returncode == 0, done.stderr
    markdown = (out / "report.md").read_text()
    for kind in ("cnn", "vgg16"):
        assert run_metrics(out / kind)["data"]["classes"] == list(CLASSES)
        assert f"{run_metrics(out / kind)['test_accuracy']:.2%}" in markdown
    # Both models are scored on the same carved test pictures.
    assert (out / "cnn" / "test_files.txt").read_text() == (out / "vgg16" / "test_files.txt").read_text()


def test_training_killed_mid_run_resumes_on_the_same_pictures(photos, tmp_path):
    run_dir = tmp_path / "run"
    faults = os.path.join(os.path.dirname(__file__), "faults.py")
    killed = subprocess.run([sys.executable, faults, "state", "2", "--", "train", "--data", str(photos), *SIZE,
                             *map(str, KINDS["cnn"]), "--out", str(run_dir)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    test_files = (run_dir / "test_files.txt").read_text()
    done = run_cnnlab("train", "--resume", run_dir)
    assert done.returncode == 0, done.stderr
    assert int(re.search(r"resuming at epoch (\d+)", done.stderr).group(1)) >= 1  # saved epochs not trained again
    history = (run_dir / "history.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in history] == list(range(CNN_EPOCHS))  # each epoch once
    assert (run_dir / "test_files.txt").read_text() == test_files
    assert run_metrics(run_dir)["test_accuracy"] >= 0.9


def test_evaluate_refuses_in_one_line_once_the_folder_has_changed(photos, tmp_path):
    folder = shutil.copytree(photos, tmp_path / "photos")
    run_dir = tmp_path / "run"
    done = run_cnnlab("train", "--data", folder, *SIZE, *TINY_MODEL, "--epochs", "1", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    picture("blue", 40, 40, np.random.default_rng(2)).save(folder / "blue" / "new.png")
    done = run_cnnlab("evaluate", run_dir)
    errors = [line for line in done.stderr.splitlines() if line.startswith("cnnlab")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and f"the data at {folder.resolve()} changed since this run was trained" in errors[0]


def test_a_folder_with_train_and_test_keeps_its_test_pictures_as_they_are(tmp_path):
    root = tmp_path / "split"
    write_class_folders(root / "train", dict.fromkeys(CLASSES, 24), 3)
    write_class_folders(root / "test", {"blue": 5, "green": 6, "red": 7}, 4)
    run_dir = tmp_path / "run"
    done = run_cnnlab("train", "--data", root, *SIZE, *KINDS["cnn"], "--out", run_dir)
    assert done.returncode == 0, done.stderr
    expected = sorted(path.relative_to(root).as_posix() for path in (root / "test").rglob("*.*"))
    assert sorted((run_dir / "test_files.txt").read_text().splitlines()) == expected
    labels = np.load(run_dir / "test_predictions.npz")["labels"]
    assert np.bincount(labels).tolist() == [5, 6, 7]
    assert run_metrics(run_dir)["test_accuracy"] >= 0.9
    info = run_cnnlab("data", "info", "--data", root, *SIZE)
    assert info.returncode == 0, info.stderr
    total = next(line for line in info.stdout.splitlines() if line.startswith("total")).split()
    assert [int(count) for count in total[1:]] == [72 - int(total[2]), int(total[2]), 18]
