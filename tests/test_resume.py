"""Crash and resume, for real: a training process is killed part-way, then resumed to the configured end."""

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import keras
import pytest

from cnnlab.cli import main
from conftest import TEST_LIMIT, TINY_MODEL, TINY_VGG16


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


EPOCHS = 4


def start_training(archive, run_dir):
    """A tiny CNN's training of EPOCHS short epochs, in a process of its own."""
    return start("train", "--data", archive, "--epochs", EPOCHS, "--train-limit", "2000", "--val-size", "500",
                 *TEST_LIMIT, *TINY_MODEL, "--out", run_dir)


def epochs_in(history_csv):
    if not history_csv.is_file():
        return []
    with open(history_csv, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def wait_for_epochs(history_csv, count, process, timeout=180):
    deadline = time.monotonic() + timeout
    while len(epochs_in(history_csv)) < count:
        assert process.poll() is None, f"training ended before it could be interrupted: {process.stderr.read()}"
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)


def state(run_dir):
    return json.loads((run_dir / "status.json").read_text())


def test_killed_training_resumes_to_exactly_the_configured_epochs(tmp_path, synthetic_archive, capsys):
    run_dir = tmp_path / "run"
    process = start_training(synthetic_archive, run_dir)
    wait_for_epochs(run_dir / "history.csv", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state(run_dir)["state"] == "running" and not (run_dir / "model.keras").exists()
    assert 2 <= len(epochs_in(run_dir / "history.csv")) < EPOCHS

    assert main(["train", "--resume", str(run_dir)]) == 0
    resumed_at = int(re.search(r"resuming at epoch (\d+)", capsys.readouterr().err).group(1))
    assert resumed_at >= 2  # the saved epochs were restored, not trained again
    assert epochs_in(run_dir / "history.csv") == list(range(EPOCHS))  # each epoch exactly once
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == EPOCHS and len(metrics["epoch_seconds"]) == EPOCHS
    assert metrics["train_seconds"] >= sum(metrics["epoch_seconds"])  # the time before the kill is counted too
    assert state(run_dir)["state"] == "finished"
    assert keras.saving.load_model(run_dir / "model.keras").output_shape == (None, 10)


def faulty(point, nth, *args):
    """`cnnlab ARGS` killed half-way through its Nth write at POINT (see tests/faults.py)."""
    faults = os.path.join(os.path.dirname(__file__), "faults.py")
    return subprocess.run([sys.executable, faults, point, str(nth), "--", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.slow
def test_kills_at_random_moments_and_in_every_save_still_give_every_epoch_once(tmp_path, synthetic_archive):
    run_dir, epochs = tmp_path / "run", 6
    # Half-way through the first best checkpoint: a fresh run's first epoch is always its best so far, while a
    # resumed run's may never improve (the synthetic colours are learnt to 100% in an epoch or two; was flaky).
    killed = faulty("best", 1, "train", "--data", synthetic_archive, "--epochs", epochs, "--train-limit", "4000",
                    "--val-size", "500", *TEST_LIMIT, *TINY_MODEL, "--out", run_dir)
    assert killed.returncode == -signal.SIGKILL, f"best #1 was never reached: {killed.stderr}"
    rng = random.Random(20261126)
    for _ in range(2):  # at random moments during training
        process = start("train", "--resume", run_dir)
        wait_for_epochs(run_dir / "history.csv", len(epochs_in(run_dir / "history.csv")) + 1, process)
        time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Half-way through each kind of state write, and between Keras's two state writes.
    for point, nth in (("state", 1), ("torn", 2), ("state", 2), ("final", 1)):
        killed = faulty(point, nth, "train", "--resume", run_dir)
        assert killed.returncode == -signal.SIGKILL, f"{point} #{nth} was never reached: {killed.stderr}"
        assert state(run_dir)["state"] == "running"

    assert main(["train", "--resume", str(run_dir)]) == 0
    assert epochs_in(run_dir / "history.csv") == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and len(metrics["epoch_seconds"]) == epochs
    assert state(run_dir)["state"] == "finished" and not list(run_dir.rglob(".tmp-*"))
    assert keras.saving.load_model(run_dir / "model.keras").output_shape == (None, 10)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_a_schedulers_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path, synthetic_archive, capsys,
                                                                             signum):
    """Ctrl-C, or the SIGTERM with which Slurm, Kubernetes and systemd stop a job (was: exit 143 at once, nothing
    said, status left "running"): the epoch finishes and its state is saved, the run is marked stopped, one line
    says how to continue, the exit status is the shell's for that signal, and --resume continues exactly."""
    run_dir = tmp_path / "run"
    process = start_training(synthetic_archive, run_dir)
    wait_for_epochs(run_dir / "history.csv", 1, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"stopped by {name}; the last saved state is kept. Continue with: "
                                                 f"cnnlab train --resume {run_dir}")
    assert f"{name}: stopping at the end of this epoch, once its state is saved" in err
    assert state(run_dir)["state"] == "stopped" and f"stopped by {name}" in state(run_dir)["reason"]
    assert main(["train", "--resume", str(run_dir)]) == 0
    resumed_at = int(re.search(r"resuming at epoch (\d+)", capsys.readouterr().err).group(1))
    assert resumed_at >= 2  # the interrupted epoch was finished and saved before stopping
    assert epochs_in(run_dir / "history.csv") == list(range(EPOCHS))


def test_killed_compare_resumes_without_retraining_the_finished_model(tmp_path, synthetic_archive):
    out = tmp_path / "both"
    process = start("compare", "--models", "cnn,vgg16", "--preset", "quick", "--data", synthetic_archive, "--epochs", "2", "--train-limit",
                    "1000", "--val-size", "100", *TEST_LIMIT, *TINY_MODEL, *TINY_VGG16, "--out", out)
    wait_for_epochs(out / "vgg16" / "history.csv", 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state(out / "cnn")["state"] == "finished" and state(out / "vgg16")["state"] == "running"
    cnn_model = (out / "cnn" / "model.keras").read_bytes()
    cnn_metrics = (out / "cnn" / "metrics.json").read_bytes()

    assert main(["compare", "--resume", str(out)]) == 0
    assert (out / "cnn" / "model.keras").read_bytes() == cnn_model  # the finished CNN was not retrained
    assert (out / "cnn" / "metrics.json").read_bytes() == cnn_metrics
    assert state(out / "vgg16")["state"] == "finished"
    assert epochs_in(out / "vgg16" / "history.csv") == [0, 1, 2]  # two head epochs, one fine-tuning epoch
    assert (out / "report.html").is_file()


def test_resume_refuses_finished_runs_and_other_options(trained_run, tmp_path, capsys):
    assert main(["train", "--resume", str(trained_run)]) == 1
    assert "has already finished; nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(trained_run), "--epochs", "3"]) == 1
    assert "--epochs cannot be used with it" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "not a cnnlab run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_vgg16_killed_while_fine_tuning_on_cached_features_resumes_every_epoch_once(tmp_path, synthetic_archive):
    """Phase 2 trains the top block (block 2 here, conftest.TINY_VGG16) and the head on cached features of the blocks
    below (and of their mirror images): killed there, the run resumes that phase from its saved state, with the
    features computed afresh."""
    run_dir = tmp_path / "run"
    process = start("train", "--data", synthetic_archive, "--preset", "seed", "--model", "vgg16", *TINY_VGG16,
                    "--set", "vgg16.finetune_epochs=3", "--set", "data.flip=true", "--epochs", "1",
                    "--train-limit", "1000", "--val-size", "100", *TEST_LIMIT, "--out", run_dir)
    wait_for_epochs(run_dir / "history.csv", 2, process)  # the head's epoch and a fine-tuning one
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state(run_dir)["state"] == "running"
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert epochs_in(run_dir / "history.csv") == [0, 1, 2, 3]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [phase["name"] for phase in metrics["phases"]] == ["head", "finetune"]
    assert metrics["phases"][1]["feature_cache_seconds"] > 0  # computed again after the kill
    assert state(run_dir)["state"] == "finished"


def test_a_start_that_failed_on_a_full_disk_leaves_a_folder_the_same_out_takes_again(synthetic_archive, tmp_path,
                                                                                      monkeypatch):
    """The disk fills as the run writes its first file: the folder holds only empty figures/ and checkpoints/ and
    the lock. Retrying the same --out trains there (it was refused as "not empty"), and --resume says what happened
    (it said "not a cnnlab run directory")."""
    from cnnlab.common.errors import CnnlabError
    from cnnlab.config import load_config
    from cnnlab.experiment import resume_run, train_run
    from cnnlab.runs.run import Run

    config = load_config("seed", {"data.source": str(synthetic_archive), "cnn.conv_blocks": [[4]],
                                  "cnn.dense_units": [8], "train.epochs": 1, "data.train_limit": 200,
                                  "data.val_size": 100, "data.test_limit": 100, "train.precision": "float32"})
    out = tmp_path / "run"

    def full_disk(self, *args):
        raise CnnlabError(f"cannot write {self.path / 'config.json'}: No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(Run, "write_config", full_disk)
        with pytest.raises(CnnlabError, match="No space left on device"):
            train_run(config, out)
    assert sorted(path.name for path in out.iterdir()) == [".lock", "checkpoints", "figures"]
    with pytest.raises(CnnlabError, match=f"{out} holds no run: its start failed before anything was written; start "
                                          f"it again with --out {out}"):
        resume_run(out)
    assert train_run(config, out) == out and Run(out).state() == "finished"
