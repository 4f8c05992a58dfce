import csv
import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.common.errors import CnnlabError
from cnnlab.config import load_config
from cnnlab.models import Phase
from cnnlab.models.factory import build_model
from cnnlab.models.transfer.network import HEAD_PREFIX, TRUNK_NAME
from cnnlab.runs import rundir
from cnnlab.runs.run import Run
from cnnlab.models.flops import training_step_flops
from cnnlab.training.observer import RunObserver
from cnnlab.training.trainer import PROGRESS, StopOnNonFiniteLoss, read_progress, train_model
from conftest import JSON_VALUES, learnable_splits

TINY = {"cnn.conv_blocks": [[8], [16]], "cnn.dense_units": [32], "train.batch_size": 32}
# As conftest.TINY_VGG16 (up to block 2, the head's input normalised); float32: cached and uncached runs are
# compared closely
TINY_VGG = {"model": "vgg16", "vgg16.weights": "none", "vgg16.head_units": [16], "vgg16.top_block": 2,
            "vgg16.head_batch_norm": True, "train.batch_size": 16, "train.precision": "float32"}


def tiny_config(**overrides):
    return load_config("seed", {**TINY, **overrides})


def train(config, splits, run_dir):
    keras.utils.set_random_seed(config.train.seed)
    model = build_model(config, len(splits.class_names), splits.x_train.shape[1:])
    return train_model(config, model, splits, Run(run_dir))


def test_training_writes_history_checkpoint_and_a_loadable_model(tmp_path):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    splits = learnable_splits()
    result = train(tiny_config(**{"train.epochs": 3}), splits, run_dir)
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
    # ten colour classes: chance is 0.1; 3 epochs of this tiny net reached exactly 0.5 on the AVX2 EPYC in float32
    assert accuracy > 0.3
    assert max(val_accuracy) == pytest.approx(
        (loaded.predict(splits.x_val, verbose=0).argmax(1) == splits.y_val).mean(), abs=1e-6
    )  # the saved model is the best epoch's


def test_history_logs_the_learning_rate_the_schedule_reached_at_each_epoch_end(tmp_path):
    config = tiny_config(**{"train.epochs": 2, "train.lr_schedule": "warmup_linear", "train.warmup_fraction": 0.0,
                            "train.final_lr_fraction": 0.0})
    train(config, learnable_splits(train=128, val=32, test=16), rundir.create_run_dir(tmp_path / "run"))
    with open(tmp_path / "run" / rundir.HISTORY, newline="") as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    assert rates == pytest.approx([0.5e-3, 0.0], abs=1e-9)  # linear from 1e-3 to 0 over two equal epochs


def test_same_seed_same_model(tmp_path):
    splits = learnable_splits(train=200, val=50)
    weights = []
    for name in ("a", "b"):
        result = train(tiny_config(**{"train.epochs": 1}), splits, rundir.create_run_dir(tmp_path / name))
        weights.append(result.model.get_weights()[0])
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_without_validation_the_last_epoch_is_kept(tmp_path):
    splits = learnable_splits(train=200, val=0)
    result = train(tiny_config(**{"train.epochs": 2}), splits, rundir.create_run_dir(tmp_path / "run"))
    assert result.best_epoch is None and (tmp_path / "run" / rundir.MODEL).is_file()


def test_tensorboard_logs_on_request(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    run_dir = rundir.create_run_dir(tmp_path / "run")
    train(tiny_config(**{"train.epochs": 2, "train.tensorboard": True}), learnable_splits(100, 20), run_dir)
    with open(run_dir / rundir.HISTORY, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for folder, column in (("train", "loss"), ("validation", "val_loss")):
        # Keras's TensorBoard callback writes each epoch's scalars as tensor summaries, one event per epoch.
        logged = EventAccumulator(str(run_dir / "tensorboard" / folder)).Reload().Tensors("epoch_loss")
        assert [event.step for event in logged] == [0, 1]
        assert [float(make_ndarray(event.tensor_proto)) for event in logged] == pytest.approx(
            [float(row[column]) for row in rows], rel=1e-6)


def test_diverging_loss_stops_training_with_a_clear_error(tmp_path):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    with pytest.raises(CnnlabError, match="loss became NaN or infinite in epoch 1"):
        train(tiny_config(**{"train.epochs": 5, "train.learning_rate": 1e10}), learnable_splits(), run_dir)
    assert not (run_dir / rundir.MODEL).exists()


def test_non_finite_loss_callback():
    guard = StopOnNonFiniteLoss()
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.model.stop_training = False  # as fit() sets it
    guard.on_train_batch_end(0, {"loss": 1.0})
    assert guard.bad_batch is None and not guard.model.stop_training
    guard.on_train_batch_end(4, {"loss": float("inf")})
    assert guard.bad_batch == 4 and guard.model.stop_training


def trained_weights(model):
    """The head's weights and VGG16's top block's (TINY_VGG's block 2): what the two phases train."""
    head = [w for layer in model.layers if layer.name.startswith(HEAD_PREFIX) or layer.name == "probabilities"
            for w in layer.get_weights()]
    return head + [w for layer in model.get_layer(TRUNK_NAME).layers if layer.name.startswith("block2_")
                   for w in layer.get_weights()]


@pytest.mark.parametrize("finetune_epochs, flip", [(0, False), (1, False), (1, True)])
def test_vgg16_cached_features_train_the_same_model_as_the_images(tmp_path, finetune_epochs, flip):
    """Each phase on features of the blocks it keeps frozen, computed once (mirror images' too where flips are on),
    ends exactly where training the whole model on the images does: the cache changes the speed, not the recipe."""
    splits = learnable_splits(train=96, val=0, test=16)  # no validation: the last epoch is kept, not the best one
    results = {}
    for cache in (True, False):
        config = load_config("seed", {**TINY_VGG, "train.epochs": 2, "vgg16.unfreeze_blocks": 1,
                                      "vgg16.finetune_epochs": finetune_epochs, "vgg16.finetune_learning_rate": 1e-3,
                                      "data.flip": flip, "vgg16.feature_cache": cache})
        results[cache] = train(config, splits, rundir.create_run_dir(tmp_path / str(cache)))
    cached, uncached = trained_weights(results[True].model), trained_weights(results[False].model)
    assert len(cached) == 12  # the head's normalisation (4 arrays) and two dense layers, then block 2's two convs
    for a, b in zip(cached, uncached):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    keras.utils.set_random_seed(config.train.seed)
    untrained = trained_weights(build_model(config, len(splits.class_names), splits.x_train.shape[1:]))
    moved = [not np.allclose(a, b) for a, b in zip(cached, untrained)]
    assert all(moved[:8]) and all(moved[8:]) == bool(finetune_epochs)  # block 2 trains in phase 2 only
    assert all(phase["feature_cache_seconds"] > 0 for phase in results[True].phases)  # once per phase
    assert [phase["feature_cache_seconds"] for phase in results[False].phases] == [None] * (1 + finetune_epochs)


def test_vgg16_two_phases_freeze_then_unfreeze_the_last_block(tmp_path):
    splits = learnable_splits(train=64, val=32, test=16)
    config = load_config("seed", {**TINY_VGG, "train.epochs": 1, "vgg16.finetune_epochs": 2,
                                  "vgg16.finetune_learning_rate": 1e-5, "vgg16.unfreeze_blocks": 1})
    run_dir = rundir.create_run_dir(tmp_path / "run")
    keras.utils.set_random_seed(0)
    model = build_model(config, 10, (32, 32, 3))
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.get_layer(TRUNK_NAME).layers}
    result = train_model(config, model, splits, Run(run_dir))
    head, finetune = result.phases
    assert (head["name"], head["epochs"], finetune["name"], finetune["epochs"]) == ("head", 1, "finetune", 2)
    assert finetune["learning_rate"] == 1e-5 and finetune["trainable_parameters"] > head["trainable_parameters"]
    with open(run_dir / rundir.HISTORY, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert [float(row["learning_rate"]) for row in rows] == pytest.approx([1e-3, 1e-5, 1e-5])  # each phase's own
    for layer in model.get_layer(TRUNK_NAME).layers:
        changed = any(not np.allclose(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
        assert changed == (layer.name.startswith("block2_") and bool(before[layer.name])), layer.name


def test_a_half_written_history_line_is_dropped_on_resume(tmp_path):
    from cnnlab.training.trainer import BestCheckpoint, _restore_history

    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,loss,seconds,val_accuracy,val_loss\n0,0.3,2.0,1.5,0.35,1.9\n"
                       "1,0.4,1.8,1.4,0.45,1.7\n2,0.5,1.")
    checkpoint = BestCheckpoint(None, tmp_path / "best.keras")
    assert _restore_history(history, 5, checkpoint) == [1.5, 1.4]
    assert (checkpoint.best, checkpoint.best_epoch) == (0.45, 2)
    assert history.read_text().splitlines()[-1].startswith("1,")


def test_a_backup_damaged_by_a_kill_falls_back_to_the_previous_generation(tmp_path):
    import json

    import h5py

    from cnnlab.training.trainer import _backed_up_epoch

    backup = tmp_path / "head"
    backup.mkdir()
    assert _backed_up_epoch(backup, 0, 5) is None  # nothing saved yet
    backup.mkdir(exist_ok=True)
    with h5py.File(backup / "latest.weights.h5.bkp", "w") as handle:
        handle.create_dataset("w", data=[1.0])
    (backup / "training_metadata.json.bkp").write_text(json.dumps({"epoch": 3, "batch": 0}))
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)  # cut off mid-write
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 4, "batch": 0}))
    assert _backed_up_epoch(backup, 0, 5) == 3
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 3
    with h5py.File(backup / "latest.weights.h5", "r") as handle:
        assert list(handle["w"]) == [1.0]
    (backup / "latest.weights.h5").write_bytes(b"garbage")
    (backup / "latest.weights.h5.bkp").write_bytes(b"garbage")
    assert _backed_up_epoch(backup, 0, 5) is None and not backup.exists()  # nothing whole: the phase starts over


def test_weights_saved_after_the_metadata_naming_them_are_one_save_ahead_and_not_used(tmp_path):
    # A kill between Keras's two writes: new weights beside the previous epoch's metadata. Both are whole.
    import os

    import h5py

    from cnnlab.training.trainer import _backed_up_epoch

    backup = tmp_path / "train"
    backup.mkdir()
    for weights, metadata, epoch in (("latest.weights.h5.bkp", "training_metadata.json.bkp", 2),
                                     ("latest.weights.h5", "training_metadata.json", 2)):
        with h5py.File(backup / weights, "w") as handle:
            handle.create_dataset("w", data=[float(weights.endswith("bkp"))])
        (backup / metadata).write_text(f'{{"epoch": {epoch}, "batch": 0}}')
    metadata_time = (backup / "training_metadata.json").stat().st_mtime_ns
    os.utime(backup / "latest.weights.h5", ns=(metadata_time + 10**6, metadata_time + 10**6))
    assert _backed_up_epoch(backup, 0, 5) == 2
    with h5py.File(backup / "latest.weights.h5", "r") as handle:
        assert list(handle["w"]) == [1.0]  # the older generation, whose weights match its metadata


@pytest.mark.parametrize("epoch", ["Infinity", "NaN", "1e400", "true", "-1", "99", '"3"', "[3]", "3.5"])
def test_backup_metadata_with_an_epoch_outside_its_phase_is_not_trusted(tmp_path, epoch):
    import h5py

    from cnnlab.training.trainer import _backed_up_epoch

    backup = tmp_path / "train"
    backup.mkdir()
    for weights, metadata, value in (("latest.weights.h5", "training_metadata.json", epoch),
                                     ("latest.weights.h5.bkp", "training_metadata.json.bkp", "2")):
        with h5py.File(backup / weights, "w") as handle:
            handle.create_dataset("w", data=[float(value == "2")])
        (backup / metadata).write_text(f'{{"epoch": {value}, "batch": 0}}')
    assert _backed_up_epoch(backup, 0, 5) == 2  # the older, sound generation


def test_history_is_replaced_whole_at_each_epoch_never_appended_in_place(tmp_path):
    from cnnlab.training.trainer import EpochTimer, HistoryFile

    history_csv, timer = tmp_path / "history.csv", EpochTimer()
    writer, files_seen = HistoryFile(history_csv, timer), []
    for epoch, logs in enumerate([{"loss": 2.0, "accuracy": 0.3}, {"loss": 1.5, "accuracy": 0.5, "val_loss": 1.6}]):
        timer.seconds.append(10.0 + epoch)  # as the timer took the epoch
        writer.on_epoch_end(epoch, dict(logs))
        files_seen.append(history_csv.stat().st_ino)  # a new file each time: a reader never sees half a row
    assert files_seen[0] != files_seen[1]
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1"] and rows[0]["val_loss"] == "NA"
    assert float(rows[1]["loss"]) == 1.5 and not list(tmp_path.glob(".tmp-*"))
    assert [float(row["seconds"]) for row in rows] == [10.0, 11.0]  # each epoch's time, which the screen no longer shows


def test_every_model_of_a_run_is_made_inside_the_placements_scope(tmp_path, monkeypatch):
    """The full model, the cached-feature head and its extractor, every compile, and the reload of the best epoch:
    a distribution strategy must see them all."""
    import contextlib
    import dataclasses

    from cnnlab.backends import placement_for
    from cnnlab.models.transfer import network as transfer

    inside, made = [], []

    @contextlib.contextmanager
    def scope():
        inside.append(True)
        try:
            yield
        finally:
            inside.pop()

    def watch(owner, name):
        original = getattr(owner, name)

        def watched(*args, **kwargs):
            made.append((name, bool(inside)))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, watched)

    for owner, name in ((transfer, "build_transfer"), (transfer, "split_before_block"), (keras.Model, "compile"),
                        (keras.saving, "load_model")):
        watch(owner, name)
    config = tiny_config(**TINY_VGG, **{"train.epochs": 1, "vgg16.finetune_epochs": 1})
    placement = dataclasses.replace(placement_for(config), _scope=scope)
    splits = learnable_splits(train=64, val=32)
    model = build_model(config, len(splits.class_names), splits.x_train.shape[1:], placement)
    train_model(config, model, splits, Run.create(tmp_path / "run"), placement=placement)
    assert [name for name, _ in made] == ["build_transfer", "split_before_block", "compile", "split_before_block", "compile",
                                         "load_model"]
    assert all(in_scope for _, in_scope in made), made


PHASES = [Phase("head", 3, 0.1, prepare=lambda model: None), Phase("finetune", 2, 0.01, prepare=lambda model: None)]


RECORDS = st.fixed_dictionaries({"name": st.sampled_from(["head", "finetune"]) | JSON_VALUES,
                                  "trainable_parameters": st.integers() | st.floats()},
                                 optional={"seconds_per_epoch": st.none() | st.floats() | st.integers()})


@given(JSON_VALUES | st.fixed_dictionaries({
    "phases_done": st.lists(st.sampled_from(["head", "finetune", "x"]), max_size=3),
    "records": st.dictionaries(st.sampled_from(["head", "finetune"]), RECORDS),
}))
def test_any_progress_file_is_read_or_refused_with_one_error(tmp_path_factory, content):
    state_dir = tmp_path_factory.mktemp("state")
    (state_dir / PROGRESS).write_text(json.dumps(content))
    try:
        progress = read_progress(state_dir, PHASES)
    except CnnlabError as exc:
        assert "damaged" in str(exc) or "not valid JSON" in str(exc)
        return
    assert progress["phases_done"] in ([], ["head"], ["head", "finetune"])
    for name in progress["phases_done"]:  # what the run's summary and metrics.json take from each record
        record = progress["records"][name]
        assert isinstance(record["name"], str) and type(record["trainable_parameters"]) is int


def test_fast_recipe_trains_the_fast_net_without_a_validation_set(tmp_path):
    from cnnlab.models import prepare_with_data

    config = load_config("fast", {"fastnet.widths": [8, 16, 16], "train.batch_size": 64, "train.epochs": 3,
                                  "train.learning_rate": 0.5})
    splits = learnable_splits(train=600, val=0)
    keras.utils.set_random_seed(0)
    model = build_model(config, 10, (32, 32, 3))
    prepare_with_data(model, config, splits.x_train)
    result = train_model(config, model, splits, Run.create(tmp_path / "run"))
    assert result.best_epoch is None and result.epochs == 3
    accuracy = (result.model.predict(splits.x_test, verbose=0).argmax(axis=1) == splits.y_test).mean()
    assert accuracy > 0.5, accuracy


class EndAfter(RunObserver):
    """Records every epoch it is told of; ends training after epoch `last`."""

    def __init__(self, last: int):
        self.last, self.seen = last, []

    def epoch_ended(self, epoch, logs):
        self.seen.append((epoch, logs["val_accuracy"]))
        return epoch == self.last


@pytest.mark.parametrize("config", [tiny_config(**{"train.epochs": 3}),
                                    load_config("seed", {**TINY_VGG, "train.epochs": 2, "vgg16.finetune_epochs": 2})],
                         ids=["cnn", "vgg16-two-phases"])
def test_an_observer_that_ends_training_leaves_a_finished_run_of_the_epochs_it_trained(tmp_path, config):
    run_dir = rundir.create_run_dir(tmp_path / "run")
    splits = learnable_splits(train=256, val=64, test=16)
    observers = [EndAfter(last=1), EndAfter(last=99)]  # both are told of every epoch; the first ends it
    keras.utils.set_random_seed(config.train.seed)
    model = build_model(config, len(splits.class_names), splits.x_train.shape[1:])
    result = train_model(config, model, splits, Run(run_dir), observers=observers)
    with open(run_dir / rundir.HISTORY, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert observers[1].seen == [(1, pytest.approx(float(rows[0]["val_accuracy"])))]  # its logged values
    assert result.epochs == 1 and result.cut_short and len(rows) == 1 and len(result.phases) == 1  # no later phase
    one_epoch = result.phases[0]
    assert one_epoch["epochs"] == 1
    assert result.summary()["flops"]["train"] == one_epoch["train_flops"]
    if config.model == "cnn":  # one phase on the whole model: one epoch's training steps, not three
        assert one_epoch["train_flops"] == training_step_flops(model) * 256
    assert (run_dir / rundir.MODEL).is_file() and result.summary()["cut_short"] is True
