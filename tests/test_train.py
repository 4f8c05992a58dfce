import csv

import keras
import numpy as np
import pytest

from cnnlab import rundir
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError
from cnnlab.train import StopOnNonFiniteLoss, train_model
from conftest import learnable_splits

TINY = {"model.conv_blocks": [[8], [16]], "model.dense_units": [32], "train.batch_size": 32}


def tiny_config(**overrides):
    return load_config("seed", {**TINY, **overrides})


def test_training_writes_history_checkpoint_and_a_loadable_model(tmp_path):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    splits = learnable_splits()
    result = train_model(tiny_config(**{"train.epochs": 3}), splits, run_dir)
    with open(run_dir / rundir.HISTORY, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert (run_dir / rundir.CHECKPOINTS / "best.keras").is_file()
    val_accuracy = [float(row["val_accuracy"]) for row in rows]
    assert result.best_epoch == int(np.argmax(val_accuracy)) + 1
    assert result.epochs == 3 and len(result.epoch_seconds) == 3 and result.train_seconds > 0
    loaded = keras.saving.load_model(run_dir / rundir.MODEL)
    accuracy = (loaded.predict(splits.x_test, verbose=0).argmax(1) == splits.y_test).mean()
    assert accuracy > 0.5  # ten colour classes: chance is 0.1
    assert max(val_accuracy) == pytest.approx(
        (loaded.predict(splits.x_val, verbose=0).argmax(1) == splits.y_val).mean(), abs=1e-6
    )  # the saved model is the best epoch's


def test_same_seed_same_model(tmp_path):
    splits = learnable_splits(train=200, val=50)
    weights = []
    for name in ("a", "b"):
        result = train_model(tiny_config(**{"train.epochs": 1}), splits, rundir.create_run_dir(tmp_path / name))
        weights.append(result.model.get_weights()[0])
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_without_validation_the_last_epoch_is_kept(tmp_path):
    splits = learnable_splits(train=200, val=0)
    result = train_model(tiny_config(**{"train.epochs": 2}), splits, rundir.create_run_dir(tmp_path / "run"))
    assert result.best_epoch is None and (tmp_path / "run" / rundir.MODEL).is_file()


def test_tensorboard_logs_on_request(tmp_path):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    train_model(tiny_config(**{"train.epochs": 1, "train.tensorboard": True}), learnable_splits(100, 20), run_dir)
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_diverging_loss_stops_training_with_a_clear_error(tmp_path):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    with pytest.raises(CnnlabError, match="loss became NaN or infinite in epoch 1"):
        train_model(tiny_config(**{"train.epochs": 5, "train.learning_rate": 1e10}), learnable_splits(), run_dir)
    assert not (run_dir / rundir.MODEL).exists()


def test_non_finite_loss_callback():
    guard = StopOnNonFiniteLoss()
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.model.stop_training = False  # as fit() sets it
    guard.on_train_batch_end(0, {"loss": 1.0})
    assert guard.bad_batch is None and not guard.model.stop_training
    guard.on_train_batch_end(4, {"loss": float("inf")})
    assert guard.bad_batch == 4 and guard.model.stop_training
