"""`cnnlab search` end to end, each in a fresh process: trials on the validation split, the best alone scored on the
test set, a preset that trains, a report; killed, it resumes; bad input is one line before anything trains."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from cnnlab.config import config_from_dict, load_config
from cnnlab.runs import rundir
from cnnlab.tuning.search import PruneTrial, trial_pruner
from conftest import (FLOAT32, TINY_KINDS, TINY_MODEL, assert_evaluate_reproduces_the_recorded_scores, run_cnnlab,
                      run_metrics)

SPACE = """
train.learning_rate = {log_uniform = [3e-4, 3e-3]}
cnn.dense_dropout = {uniform = [0.0, 0.5]}
"""
TINY_SEARCH_DATA = ["--train-limit", "600", "--val-size", "200", "--test-limit", "500"]


def write_space(folder: Path, text: str = SPACE) -> Path:
    path = folder / "space.toml"
    path.write_text(text)
    return path


def trials_of(out: Path) -> list[dict]:
    with open(out / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def history_column(run_dir: Path, name: str) -> list[float]:
    with open(run_dir / rundir.HISTORY, newline="") as handle:
        return [float(row[name]) for row in csv.DictReader(handle)]


def test_a_search_scores_only_its_best_trial_on_the_test_set_and_its_preset_trains(tmp_path, synthetic_archive):
    out = tmp_path / "search"
    done = run_cnnlab("search", "--space", write_space(tmp_path), "--trials", "3", "--no-prune", "--epochs", "2",
                      "--data", synthetic_archive, *TINY_SEARCH_DATA, *TINY_MODEL, *FLOAT32, "--out", out)
    assert done.returncode == 0, done.stderr
    trials = trials_of(out)
    assert [row["state"] for row in trials] == ["complete"] * 3
    trial_dirs = [out / "trials" / f"trial-{number:03d}" for number in range(3)]
    # Each trial's value is its best epoch's validation accuracy, and the best trial is the best of them.
    values = [max(history_column(trial_dir, "val_accuracy")) for trial_dir in trial_dirs]
    assert [float(row["val_accuracy"]) for row in trials] == pytest.approx(values)
    best = max(range(3), key=lambda number: (values[number], -number))
    scored = [(trial_dir / rundir.TEST_PREDICTIONS).is_file() for trial_dir in trial_dirs]
    assert scored == [number == best for number in range(3)]  # the test set met the best trial's model alone
    assert_evaluate_reproduces_the_recorded_scores(trial_dirs[best])
    # Each trial trained with the settings it drew, and the best's are the preset best.toml.
    for row, trial_dir in zip(trials, trial_dirs):
        config = json.loads((trial_dir / rundir.CONFIG).read_text())
        assert config["train"]["learning_rate"] == pytest.approx(float(row["train.learning_rate"]))
        assert 3e-4 <= config["train"]["learning_rate"] <= 3e-3
    preset = load_config(str(out / "best.toml"))
    trained_with = config_from_dict(json.loads((trial_dirs[best] / rundir.CONFIG).read_text()))
    assert preset == dataclasses.replace(trained_with, preset="best", description=preset.description)
    report = (out / "report.md").read_text()
    assert "## Search" in report and f"The best, trial {best}, reached {values[best]:.2%} validation accuracy" in report
    trained = run_cnnlab("train", "--preset", out / "best.toml", "--epochs", "1", "--out", tmp_path / "again")
    assert trained.returncode == 0, trained.stderr
    again = config_from_dict(json.loads((tmp_path / "again" / rundir.CONFIG).read_text()))
    assert again.train.learning_rate == preset.train.learning_rate and again.cnn == preset.cnn
    other = trial_dirs[(best + 1) % 3]
    refused = run_cnnlab("report", other, "--out", tmp_path / "report")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith(f"cnnlab: error: {other} has not been scored on the test set")


def test_a_killed_search_resumes_its_interrupted_trial_and_runs_the_rest(tmp_path, synthetic_archive):
    out = tmp_path / "search"
    command = [sys.executable, "-m", "cnnlab", "search", "--space", str(write_space(tmp_path)), "--trials", "3",
               "--no-prune", "--epochs", "3", "--data", str(synthetic_archive), *TINY_SEARCH_DATA, *TINY_MODEL,
               *FLOAT32, "--out", str(out)]
    search = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "trials" / "trial-001" / rundir.HISTORY
    deadline = time.monotonic() + 300
    while not (history.is_file() and len(history.read_text().splitlines()) >= 3):  # trial 1 trained 2 epochs
        assert search.poll() is None and time.monotonic() < deadline, "the search ended before it could be killed"
        time.sleep(0.1)
    search.send_signal(signal.SIGKILL)
    search.wait()
    resumed = run_cnnlab("search", "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial 1 of 3 (resumed)" in resumed.stderr and "resuming at epoch" in resumed.stderr
    assert "trial 0 of 3" not in resumed.stderr  # finished before the kill: not trained again
    trials = trials_of(out)
    assert [row["trial"] for row in trials] == ["0", "1", "2"] and {row["state"] for row in trials} == {"complete"}
    epochs = history_column(out / "trials" / "trial-001", "epoch")
    assert epochs == [0, 1, 2]  # every epoch once, the ones before the kill kept
    study = optuna.load_study(study_name="cnnlab", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3 and (out / "report.html").is_file()


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path, synthetic_archive):
    out = tmp_path / "search"
    space = write_space(tmp_path, "train.learning_rate = {choice = [1e10]}")  # every trial diverges
    done = run_cnnlab("search", "--space", space, "--trials", "2", "--epochs", "1", "--data", synthetic_archive,
                      *TINY_SEARCH_DATA, *TINY_MODEL, *FLOAT32, "--out", out)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (f"cnnlab: error: none of the 2 trials completed (why: {out / 'trials.csv'})"
                                            "; nothing to report")
    trials = trials_of(out)
    assert [row["state"] for row in trials] == ["failed", "failed"]  # the second ran after the first failed
    assert all(row["failure"].startswith("training diverged") for row in trials)
    assert not (out / "best.toml").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize("space, arguments, message", [
    ("train.learning_rate = {uniform = [0.01, 0.001]}", [], "range [0.01, 0.001] is empty"),
    ("train.lerning_rate = {uniform = [0.1, 0.2]}", [], "unknown setting"),
    ("train.learning_rate = {log_uniform = [-1, 0.1]}", [], "must lie above 0"),
    ("train.learning_rate = {uniform = [0.1, 0.2]}", ["--preset", "fast"], "holds none out (data.val_size = 0)"),
    ("train.learning_rate = {uniform = [0.1, 0.2]}", ["--trials", "0"], "--trials must be at least 1"),
    (None, [], "search needs --space SPACE.toml"),
])
def test_bad_search_input_is_one_line_before_anything_trains(tmp_path, space, arguments, message):
    given = ["--space", write_space(tmp_path, space)] if space is not None else []
    done = run_cnnlab("search", *given, *arguments, "--out", tmp_path / "search", timeout=120)
    assert done.returncode == 1 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "search").exists()


def test_the_pruner_ends_a_trial_that_trails_the_others_at_the_same_epoch():
    study = optuna.create_study(direction="maximize", pruner=trial_pruner(prune=True))
    for value in (0.6, 0.7):
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(value, epoch)
        study.tell(trial, value)
    leading, trailing = PruneTrial(study.ask()), PruneTrial(study.ask())
    assert leading.epoch_ended(1, {"val_accuracy": 0.1}) is False  # the first epoch is a warm-up: never judged
    assert leading.epoch_ended(2, {"val_accuracy": 0.8}) is False
    assert trailing.epoch_ended(1, {"val_accuracy": 0.5}) is False
    assert trailing.epoch_ended(2, {"val_accuracy": 0.5}) is True
    assert trailing.trial.storage.get_trial(trailing.trial._trial_id).intermediate_values == {1: 0.5, 2: 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("kind", [kind for kind in TINY_KINDS if kind != "cnn"])
def test_search_runs_on_every_model_kind(tmp_path, synthetic_archive, kind):
    out = tmp_path / "search"
    space = write_space(tmp_path, "train.learning_rate = {log_uniform = [1e-4, 1e-3]}")
    batch = ["--batch-size", "64"] if kind == "fastnet" else []
    done = run_cnnlab("search", "--space", space, "--trials", "2", "--epochs", "1", "--data", synthetic_archive,
                      *TINY_SEARCH_DATA, *TINY_KINDS[kind], *batch, *FLOAT32, "--out", out)
    assert done.returncode == 0, done.stderr
    best = min(trials_of(out), key=lambda row: (-float(row["val_accuracy"]), int(row["trial"])))
    best_run = out / "trials" / f"trial-{int(best['trial']):03d}"
    assert load_config(str(out / "best.toml")).model == kind.split("-")[0]
    assert max(history_column(best_run, "val_accuracy")) == pytest.approx(float(best["val_accuracy"]))
    assert "test_accuracy" in run_metrics(best_run)
