"""The command line end to end, on the synthetic archive: what a user types, what lands on disk, what they read."""

import hashlib
import json
import shutil
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.common.text import markdown_text
from cnnlab.runs import rundir
from conftest import TINY_MODEL, batch_payload, run_cnnlab, write_folder


def run_cli(capsys, *args):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(code, err, expected, exit_code=1):
    assert code == exit_code
    informational = ("warning:", "run directory:", "phase ", "computing ", "training ", "epoch ", "about ")
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(informational)]
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnlab") and "Traceback" not in err
    assert expected in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------------------------------
# train


def test_train_writes_a_complete_run_directory(trained_run, synthetic_archive):
    names = {path.relative_to(trained_run).as_posix() for path in trained_run.rglob("*")}
    assert {"config.json", "status.json", "metrics.json", "history.csv", "model.keras",
            "figures/learning_curves.png", "figures/confusion_matrix.png"} <= names
    assert not [name for name in names if ".tmp-" in name]  # no temporary file left behind
    config = json.loads((trained_run / "config.json").read_text())
    assert config["preset"] == "seed" and config["train"]["epochs"] == 2 and config["data"]["train_limit"] == 1000
    assert config["data"]["source"] == str(synthetic_archive.resolve()) and config["data"]["image_size"] == 32
    assert config["model"] == "cnn" and config["cnn"]["conv_blocks"] == [[8], [16]]
    assert json.loads((trained_run / "status.json").read_text())["state"] == "finished"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "per_class_accuracy", "confusion_matrix", "epochs", "train_seconds",
                "seconds_per_epoch", "versions", "hardware", "best_epoch", "parameters"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["train_images"] == 1000 and metrics["val_images"] == 500
    source = json.loads((trained_run / "source.json").read_text())
    assert source["kind"] == "cifar10" and source["content_hash"] == sha256_of(synthetic_archive)
    assert metrics["data"] == {key: value for key, value in source.items() if key != "test_files"}
    assert metrics["data"]["hash_status"] == "unofficial" and not (trained_run / "test_files.txt").exists()
    assert metrics["versions"]["keras"] == keras.__version__ and metrics["hardware"]["cpu_cores"] >= 1
    assert sum(map(sum, metrics["confusion_matrix"])) == 1000  # --test-limit
    assert metrics["test_accuracy"] > 0.5  # the synthetic classes are colours: learnable in two epochs
    assert keras.saving.load_model(trained_run / "model.keras").output_shape == (None, 10)


def test_data_from_the_environment_variable(tmp_path, capsys, synthetic_folder, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(synthetic_folder))
    code, out, _ = run_cli(capsys, "data", "info")
    assert code == 0 and "not checked (folder)" in out


@pytest.mark.parametrize("val_size", ["1000", "0.02"])  # a count, or a fraction of the training set
def test_data_info_counts_every_split_and_class(capsys, synthetic_archive, val_size):
    code, out, err = run_cli(capsys, "data", "info", "--data", synthetic_archive, "--val-size", val_size)
    assert code == 0
    assert "warning: " in err
    lines = out.splitlines()
    assert lines[0] == f"source:  cifar10 {synthetic_archive.resolve()}"
    assert lines[1] == f"content: {sha256_of(synthetic_archive)} (unofficial)"
    assert lines[2] == "images:  32 x 32 px"
    assert lines[-1].split() == ["total", "49000", "1000", "10000"]
    assert lines[-11].split() == ["airplane", "4900", "100", "1000"]


def test_image_size_is_the_data_setting_and_cifar10_refuses_another(tmp_path, capsys, synthetic_archive):
    for command in (["data", "info"], ["train", "--out", tmp_path / "run"]):
        code, _, err = run_cli(capsys, *command, "--data", synthetic_archive, "--image-size", "64")
        assert_one_line_error(code, err, "data.image_size is 64, but CIFAR-10 images are 32 px")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------------------
# evaluate and predict


def test_evaluate_rescores_and_redraws(run_copy, capsys):
    before = json.loads((run_copy / "metrics.json").read_text())
    (run_copy / "figures" / "confusion_matrix.png").unlink()
    code, out, _ = run_cli(capsys, "evaluate", run_copy)
    assert code == 0
    after = json.loads((run_copy / "metrics.json").read_text())
    assert after["test_accuracy"] == pytest.approx(before["test_accuracy"])
    assert after["train_seconds"] == before["train_seconds"]  # training facts are kept
    assert (run_copy / "figures" / "confusion_matrix.png").is_file()
    assert f"test accuracy {before['test_accuracy']:.4f}" in out and "airplane" in out


def test_predict_text_and_json(trained_run, tmp_path, capsys):
    red = tmp_path / "red square.png"
    Image.new("RGB", (200, 120), (230, 20, 20)).save(red)
    grey = tmp_path / "grey.jpg"
    Image.new("L", (10, 10), 128).save(grey)
    code, out, _ = run_cli(capsys, "predict", trained_run, red, grey)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{red}: ") and lines[0].count("%") == 3
    code, out, _ = run_cli(capsys, "predict", trained_run, red, "--json", "--top", "5")
    result = json.loads(out)
    assert code == 0 and result[0]["image"] == str(red) and len(result[0]["top"]) == 5
    probabilities = [guess["probability"] for guess in result[0]["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_predict_refuses_bad_images(trained_run, tmp_path, capsys):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    code, _, err = run_cli(capsys, "predict", trained_run, fake)
    assert_one_line_error(code, err, "not a readable image")
    code, _, err = run_cli(capsys, "predict", trained_run, tmp_path / "missing.png")
    assert_one_line_error(code, err, "image not found")


def test_evaluate_refuses_while_another_process_writes_the_run(run_copy, capsys):
    hold = "import sys, time\nfrom cnnlab.runs import rundir\nwith rundir.locked(sys.argv[1]):\n    print(1, flush=True)\n    time.sleep(60)"
    writer = subprocess.Popen([sys.executable, "-c", hold, str(run_copy)], stdout=subprocess.PIPE, text=True)
    try:
        writer.stdout.readline()
        code, _, err = run_cli(capsys, "evaluate", run_copy)
        assert_one_line_error(code, err, f"is in use by process {writer.pid}")
    finally:
        writer.kill()
        writer.wait()
    code, _, _ = run_cli(capsys, "evaluate", run_copy)  # the writer was killed: the kernel released its lock
    assert code == 0


def test_evaluate_mends_a_damaged_metrics_file_and_the_report_shows_what_is_lost(trained_run, tmp_path, capsys):
    run_dir = tmp_path / "damaged"
    shutil.copytree(trained_run, run_dir)
    expected = json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]
    (run_dir / "metrics.json").write_text("[1]")
    code, out, err = run_cli(capsys, "evaluate", run_dir)
    assert code == 0 and "metrics.json is damaged (not a JSON object); writing it anew" in err
    assert out.startswith(f"test accuracy {expected:.4f}")
    code, _, _ = run_cli(capsys, "report", run_dir, "--out", tmp_path / "report")
    assert code == 0
    row = next(line for line in (tmp_path / "report" / "report.md").read_text().splitlines()
               if line.startswith("| ") and "%" in line and "test accuracy" not in line)  # the row, not the header
    # Scores re-made; the lost training summary shown as "-" (both as report.md escapes them).
    assert markdown_text(f"{expected:.2%}") in row and "| - |" in row


def test_models_with_code_in_them_are_refused(trained_run, tmp_path, capsys):
    import shutil

    hostile = tmp_path / "hostile"
    shutil.copytree(trained_run, hostile)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Lambda(lambda x: x * 2.0),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.save(hostile / "model.keras")
    before = (hostile / "metrics.json").read_bytes()
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    for command in (["evaluate", hostile], ["predict", hostile, tmp_path / "x.png"]):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err, "cannot load")
        assert "Lambda" in err
    assert (hostile / "metrics.json").read_bytes() == before


def test_evaluate_and_predict_refuse_unfinished_runs(tmp_path, capsys):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    rundir.write_json(run_dir / rundir.CONFIG, {})
    rundir.set_status(run_dir, "running")
    code, _, err = run_cli(capsys, "evaluate", run_dir)
    assert_one_line_error(code, err, "is not a finished run (status: running)")
    code, _, err = run_cli(capsys, "predict", tmp_path / "nowhere", tmp_path / "x.png")
    assert_one_line_error(code, err, "run directory not found")


# ---------------------------------------------------------------------------------------------------------------------
# the data a run was trained on: recorded, and refused by later commands once it changed


def test_evaluate_resume_and_report_refuse_data_changed_since_training(tmp_path, good_files):
    folder = write_folder(tmp_path / "cifar-10-batches-py", good_files)
    run_dir = tmp_path / "run"
    done = run_cnnlab("train", "--data", folder, "--epochs", "1", "--train-limit", "256", "--val-size", "0.002",
                      "--test-size", "0.3", "--strict", *TINY_MODEL, "--out", run_dir)
    assert done.returncode == 0, done.stderr
    data = json.loads((run_dir / "config.json").read_text())["data"]
    assert (data["source"], data["image_size"], data["val_size"], data["test_size"], data["strict"]) == (
        str(folder.resolve()), 32, 0.002, 0.3, True)
    assert json.loads((run_dir / "metrics.json").read_text())["val_images"] == 100  # 0.2% of 50,000

    (folder / "test_batch").write_bytes(batch_payload(seed=99))  # the data changes after training
    kept = {name: (run_dir / name).read_bytes() for name in ("metrics.json", "test_predictions.npz")}
    done = run_cnnlab("evaluate", run_dir)
    assert_one_line_error(done.returncode, done.stderr, f"the data at {folder.resolve()} changed since this run was "
                                                        "trained (content hash ")
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept
    done = run_cnnlab("report", run_dir, "--out", tmp_path / "report")
    assert done.returncode == 0 and "no pictures of test images" in done.stderr and "changed since" in done.stderr
    rundir.set_status(run_dir, "failed", "killed")  # as if training had stopped before the data changed
    done = run_cnnlab("train", "--resume", run_dir)
    assert_one_line_error(done.returncode, done.stderr, "changed since this run was trained")
    assert rundir.read_status(run_dir) == {"state": "failed", "reason": "killed"}

    rundir.set_status(run_dir, "finished")
    done = run_cnnlab("evaluate", run_dir, "--data", folder)  # other data, named on purpose, is scored
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["data"]["content_hash"] != json.loads(
        (run_dir / "source.json").read_text())["content_hash"]


# ---------------------------------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing written, nothing lost


@pytest.mark.parametrize(
    "args, expected, exit_code",
    [
        (["--epochs", "0"], "train.epochs must be between 1 and 10,000, got 0", 1),
        (["--batch-size", "-4"], "train.batch_size must be between 1 and 65,536, got -4", 1),
        (["--lr", "0"], "train.learning_rate must be in (0, 1e+10], got 0.0", 1),
        (["--preset", "nope"], "unknown preset 'nope'", 1),
        (["--frobnicate"], "unrecognized arguments: --frobnicate", 2),
        (["--epochs", "many"], "invalid int value: 'many'", 2),
        (["--set", "train.epochz=3"], "unknown setting 'train.epochz'", 1),
        (["--set", "nonsense"], "--set expects KEY=VALUE", 1),
        (["--data", "/no/such/file.tar.gz"], "data path not found", 1),
        (["--devices", "-1"], "train.devices must be between 0 and 4,096, got -1", 1),
        (["--devices", "some"], "expected a number of devices or 'all', got 'some'", 2),
        (["--processes", "2"], "several processes need all of --coordinator HOST:PORT, --processes N and "
                               "--process-id I", 1),
        (["--coordinator", "head", "--processes", "2", "--process-id", "0"],
         "--coordinator must be HOST:PORT, got 'head'", 1),
    ],
)
def test_bad_train_arguments(tmp_path, capsys, args, expected, exit_code):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *args, "--out", out)
    assert_one_line_error(code, err, expected, exit_code)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--weights", "imagenett"], "unknown --weights value 'imagenett'"),
        (["--weights", "/no/such/vgg16.h5"], "weights file not found"),
        (["--weights", "NOT_HDF5"], "is not an HDF5 weights file"),
        (["--weights", "WRONG_LAYERS"], "does not hold VGG16 no-top weights"),
        (["--vgg16-size", "16"], "vgg16.image_size must be between 32 and 1,024, got 16"),
    ],
)
def test_bad_vgg16_arguments(tmp_path, capsys, synthetic_archive, args, expected):
    import h5py

    (tmp_path / "notes.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "wrong.h5", "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
        handle.create_group("dense").attrs["weight_names"] = [b"kernel:0"]
        handle["dense"].create_dataset("kernel:0", data=[[0.0]])
    args = [{"NOT_HDF5": tmp_path / "notes.h5", "WRONG_LAYERS": tmp_path / "wrong.h5"}.get(a, a) for a in args]
    for command in (["train", "--model", "vgg16"], ["compare", "--models", "cnn,vgg16"]):
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, *command, "--data", synthetic_archive, *args, "--out", out)
        assert_one_line_error(code, err, expected)
        assert not out.exists()


def test_data_that_is_not_an_archive(tmp_path, capsys):
    fake = tmp_path / "cifar.tar.gz"
    fake.write_text("hello")
    code, _, err = run_cli(capsys, "train", "--data", fake, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "not a readable gzip-compressed tar archive")
    assert not (tmp_path / "run").exists()


def test_hash_mismatch_under_sha256(tmp_path, capsys, synthetic_archive):
    code, _, err = run_cli(capsys, "train", "--data", synthetic_archive, "--sha256", "ab" * 32, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "given with --sha256")
    assert not (tmp_path / "r").exists()


def test_existing_run_directory_is_never_overwritten(tmp_path, capsys, synthetic_archive):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "metrics.json").write_text('{"test_accuracy": 0.9}')
    code, _, err = run_cli(capsys, "train", "--data", synthetic_archive, "--epochs", "1", "--out", out)
    assert_one_line_error(code, err, "already exists and is not empty")
    assert [path.name for path in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_text() == '{"test_accuracy": 0.9}'


def test_failed_training_is_recorded_in_the_run_status(tmp_path, capsys, synthetic_archive):
    out = tmp_path / "diverged"
    code, _, err = run_cli(capsys, "train", "--data", synthetic_archive, "--epochs", "3", "--lr", "1e10",
                           "--train-limit", "256", "--val-size", "100", *TINY_MODEL, "--out", out)
    assert_one_line_error(code, err, "training diverged")
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "diverged" in status["reason"]
    assert not (out / "model.keras").exists()


# ---------------------------------------------------------------------------------------------------------------------
# the installed entry points


def cnnlab_subprocess(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["data"], ["data", "info"], ["search"],
                                     ["track"]])
def test_every_command_has_help(command):
    result = cnnlab_subprocess(*command, "--help")
    assert result.returncode == 0 and "usage: cnnlab" in result.stdout


def test_errors_never_show_a_traceback():
    result = cnnlab_subprocess("train", "--data", "/no/such/cifar.tar.gz")
    assert result.returncode == 1
    assert result.stderr.strip() == "cnnlab: error: data path not found: /no/such/cifar.tar.gz"
    result = cnnlab_subprocess("bogus")
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_predict_uses_the_runs_test_time_augmentation(trained_run, tmp_path, capsys):
    import shutil

    from cnnlab.evaluation.scoring import predict_probabilities
    from cnnlab.runs.run import load_run_model
    from cnnlab.serving.predict import load_image

    run_dir = tmp_path / "with-tta"
    shutil.copytree(trained_run, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["test_time_augmentation"] = 2
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    picture = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(picture)
    code, out, _ = run_cli(capsys, "predict", run_dir, picture, "--json", "--top", "10")
    assert code == 0
    answered = {guess["class"]: guess["probability"] for guess in json.loads(out)[0]["top"]}
    model, image = load_run_model(run_dir), load_image(picture, (32, 32))[None]
    class_names = metrics["data"]["classes"]
    for augmentation, matches in ((2, True), (0, False)):
        expected = predict_probabilities(model, image, augmentation=augmentation)[0]
        close = np.allclose([answered[name] for name in class_names], expected, rtol=1e-4, atol=1e-6)
        assert close == matches

    metrics["test_time_augmentation"] = 7
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = run_cli(capsys, "predict", run_dir, picture)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "metrics.json is damaged (test_time_augmentation is not one of (0, 1, 2))" in err
