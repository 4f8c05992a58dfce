"""`cnnlab evaluate RUN --corruptions`: bad input refused before anything is written, the scores kept by a later plain
`evaluate` only while the test images are the same, and image folders (any size, any number of test images).

Every model kind, each in a fresh process, is in test_cli_every_model.py."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cnnlab.evaluation.corruptions import CORRUPTIONS
from conftest import TINY_MODEL, batch_payload, write_folder
from test_cli import assert_one_line_error, run_cli


@pytest.mark.parametrize("args, expected, exit_code", [
    (["--corruptions", "--corruption-images", "0"], "the number of corruption images must be at least 1, got 0", 1),
    (["--corruptions", "--corruption-images", "-3"], "must be at least 1, got -3", 1),
    (["--corruptions", "--corruption-seed", "-1"], "the corruption seed must be in 0..2**32-1, got -1", 1),
    (["--corruptions", "--corruption-seed", str(2**32)], "the corruption seed must be in 0..2**32-1", 1),
    (["--corruption-images", "40"], "--corruption-images and --corruption-seed choose how --corruptions scores; "
                                    "add --corruptions", 1),
    (["--corruption-seed", "3"], "add --corruptions", 1),
    (["--corruptions", "--corruption-images", "forty"], "invalid int value: 'forty'", 2),
])
def test_bad_corruption_arguments_are_refused_in_one_line_and_nothing_is_written(trained_run, capsys, args,
                                                                                 expected, exit_code):
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in trained_run.rglob("*") if path.is_file()}
    code, out, err = run_cli(capsys, "evaluate", trained_run, *args)
    assert_one_line_error(code, err, expected, exit_code)
    assert out == ""
    after = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in trained_run.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.slow
def test_a_plain_evaluate_keeps_the_corruption_scores_unless_the_test_images_changed(trained_run, synthetic_folder,
                                                                                     tmp_path, capsys):
    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--corruptions", "--corruption-images", "10")
    assert code == 0, err
    record = json.loads((run_dir / "metrics.json").read_text())["corruptions"]
    assert (record["images"], record["seed"]) == (10, 0)
    assert "10 test images, clean and under 15 corruptions x 5 severities: 760 predictions" in err
    assert all(f"] {name} " in err for name in CORRUPTIONS)  # progress, one line per corruption
    assert out.splitlines()[-1].startswith("figures: ") and "  fog  " in out

    code, _, err = run_cli(capsys, "evaluate", run_dir)  # the same data: kept as it was
    assert code == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["corruptions"] == record

    files = {path.name: path for path in synthetic_folder.iterdir()}
    files["test_batch"] = batch_payload(seed=99)  # another test set of the same shape and classes
    other = write_folder(tmp_path / "other" / "cifar-10-batches-py", files)
    code, _, err = run_cli(capsys, "evaluate", run_dir, "--data", other)
    assert code == 0, err
    assert "corruptions" not in json.loads((run_dir / "metrics.json").read_text())
    assert "note: the scores under corruptions were for other test images and are dropped" in err


def write_pictures(root, per_class, rng):
    for name, colour in {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}.items():
        (root / name).mkdir(parents=True)
        for number in range(per_class):
            size = rng.integers(14, 40, 2)
            pixels = np.array(colour) + rng.integers(-20, 20, (*size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{number}.png")


@pytest.mark.slow
def test_an_image_folder_at_16_px_is_scored_on_all_its_test_images_when_fewer_are_there_than_asked(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_pictures(tmp_path / "photos" / "train", 6, rng)
    write_pictures(tmp_path / "photos" / "test", 2, rng)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "photos", "--image-size", "16", "--epochs", "1",
                           "--val-size", "0", "--batch-size", "6", *TINY_MODEL, "--out", run_dir)
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--corruptions", "--corruption-images", "1000",
                             "--corruption-seed", "7")
    assert code == 0, err
    assert "note: --corruption-images 1000 is more than the 6 test images; using them all" in err
    record = json.loads((run_dir / "metrics.json").read_text())["corruptions"]
    assert (record["images"], record["seed"]) == (6, 7)
    assert all(value in {0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1} for row in record["accuracy"].values()
               for value in row)  # accuracies of 6 images
    assert "corruptions (6 test images, seed 7): clean accuracy " in out
