"""Training: the model's phases, Keras `fit` with callbacks, the best epoch kept, every save atomic.

Each model kind names its phases (its `KIND.phases`): the CNN and the fast net train in one; VGG16 in two, head then
fine-tuning, each optionally on features of its frozen layers computed once. `train_model` is a loop over the
phases: where to resume, then for each phase its inputs (the part above the cached features, or the whole model),
its callbacks, `fit`, and the record of the finished phase; at the end the best epoch by validation accuracy becomes
the run's `model.keras`. Every model is built and compiled by `models.factory.ModelFactory`, in the run's
placement; every file goes where the run's `Run` says. `history.csv` gets one row per epoch across phases.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from cnnlab.backends import Placement, fit_input, placement_for, validation_input
from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.common.files import atomic_path, read_json, write_json
from cnnlab.config import RunConfig
from cnnlab.data import Splits
from cnnlab.data.augment import Augmentation, MirroredViews
from cnnlab.data.batches import ShuffledBatches, one_hot
from cnnlab.evaluation.progress import PassProgress, batches_of
from cnnlab.models import Phase, kind_of
from cnnlab.models.factory import ModelFactory
from cnnlab.models.flops import forward_flops, training_step_flops
from cnnlab.models.recipe import Lookahead
from cnnlab.models.saving import portable_copy
from cnnlab.runs.history import history_number, read_rows, write_rows
from cnnlab.runs.run import Run
from cnnlab.training.observer import RunObserver
from cnnlab.training.progress import RunProgress

BEST_CHECKPOINT = "best.keras"
RESUME_DIR = "resume"  # under checkpoints/: Keras BackupAndRestore state per phase, and finished phases
PROGRESS = "progress.json"


@dataclass
class TrainingResult:
    model: keras.Model
    epochs: int
    best_epoch: int | None
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    phases: list[dict[str, object]] = field(default_factory=list)
    cut_short: bool = False  # an observer ended training before its planned epochs (a search's pruner)

    def summary(self) -> dict[str, object]:
        return {
            "epochs": self.epochs,
            **({"cut_short": True} if self.cut_short else {}),
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.train_seconds, 2),
            "seconds_per_epoch": round(float(np.mean(self.epoch_seconds)), 2) if self.epoch_seconds else None,
            "epoch_seconds": [round(seconds, 2) for seconds in self.epoch_seconds],
            "phases": self.phases,
            "flops": {stage: _phases_total(self.phases, f"{stage}_flops") for stage in ("train", "validation")},
            "parameters": int(self.model.count_params()),
            # The most any phase trained: the saved model's own flags depend on which phase had the best epoch.
            "trainable_parameters": max(
                (phase["trainable_parameters"] for phase in self.phases), default=trainable_parameters(self.model)
            ),
        }


def _phases_total(phases: list[dict], key: str) -> int | None:
    """The phases' `key` added up; None where a phase has none (its record was written by an older cnnlab)."""
    return sum(phase[key] for phase in phases) if all(key in phase for phase in phases) else None


def trainable_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


# ---------------------------------------------------------------------------------------------------------------------
# Callbacks


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, validation included, as a user would time it."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class LearningRateLog(keras.callbacks.Callback):
    """The optimizer's learning rate at each epoch's end, into history.csv, so the report can draw the schedule.
    (keras.callbacks.LearningRateScheduler logs it too, but only for a schedule it sets itself, per epoch.)"""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite; fit then returns and the caller reports it."""

    def __init__(self):
        super().__init__()
        self.bad_batch: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.bad_batch = batch
            self.model.stop_training = True


class StopWhenAsked(keras.callbacks.Callback):
    """Ends training at the end of an epoch once `asked()` is true; placed after the state is saved."""

    def __init__(self, asked: Callable[[], bool]):
        super().__init__()
        self.asked = asked

    def on_epoch_end(self, epoch, logs=None):
        if self.asked():
            self.model.stop_training = True


class TellObservers(keras.callbacks.Callback):
    """Each epoch's logged values to the run's observers; the first that asks ends training after this epoch."""

    def __init__(self, observers: Sequence[RunObserver]):
        super().__init__()
        self.observers = observers
        self.ended_after: int | None = None  # the epoch (from 1) after which an observer ended training

    def on_epoch_end(self, epoch, logs=None):
        values = {key: float(value) for key, value in (logs or {}).items()}
        if any([observer.epoch_ended(epoch + 1, values) for observer in self.observers]):  # every one is told
            self.ended_after = epoch + 1
            self.model.stop_training = True


class BestCheckpoint(keras.callbacks.Callback):
    """Save `full_model` whenever validation accuracy improves, atomically.

    Unlike keras.callbacks.ModelCheckpoint it saves the full model even while `fit` runs on the part above cached
    features, and a kill mid-save never leaves a damaged checkpoint behind.
    """

    def __init__(self, full_model: keras.Model, path: Path):
        super().__init__()
        self.full_model, self.path = full_model, Path(path)
        self.best, self.best_epoch = -np.inf, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        accuracy = logs.get("val_accuracy")
        if not np.isfinite(logs.get("loss", 0.0)):
            return  # a diverged model is never "best", whatever its validation accuracy
        if accuracy is not None and accuracy > self.best:
            self.best, self.best_epoch = accuracy, epoch + 1
            with atomic_path(self.path) as temporary:
                self.full_model.save(temporary)


class HistoryFile(keras.callbacks.Callback):
    """history.csv, one row per epoch, rewritten whole and atomically at each epoch end.

    Keras's CSVLogger appends to the file in place, so a kill during its write leaves half a line; here a reader,
    or a resumed run, sees the history before the epoch or after it. Columns as CSVLogger writes them: "epoch",
    then the logged values by name, "NA" where an epoch has none; and "seconds", the epoch's wall time as `timer`
    took it, so that a resumed run keeps its earlier timings.
    """

    def __init__(self, path: Path, timer: EpochTimer):
        super().__init__()
        self.path, self.timer = Path(path), timer

    def on_epoch_end(self, epoch, logs=None):
        rows = read_rows(self.path)
        values = {**(logs or {}), "seconds": self.timer.seconds[-1]}
        rows.append({"epoch": epoch, **{key: float(value) for key, value in sorted(values.items())}})
        columns = list(dict.fromkeys(key for row in rows for key in row))
        write_rows(self.path, rows, columns)


# ---------------------------------------------------------------------------------------------------------------------
# Training


def train_model(
    config: RunConfig, model: keras.Model, splits: Splits, directory: Run, resume: bool = False,
    stop_requested: Callable[[], bool] = lambda: False, placement: Placement | None = None,
    observers: Sequence[RunObserver] = (), scores_test: bool = True,
) -> TrainingResult:
    """Train `model` (built by the caller, seeded, in `placement`) through its kind's phases; save the best to
    model.keras.

    State is saved every epoch (and every `save_every_steps` steps): Keras's BackupAndRestore keeps each phase's
    weights, optimizer and epoch; a finished phase leaves the full model's weights. With `resume=True`, finished
    phases are skipped, the phase in progress continues from its last saved state, and history.csv is cut back to
    the epochs that state includes, so that every epoch appears once. When `stop_requested()` turns true, training
    ends at the next epoch end, after its state is saved, by raising KeyboardInterrupt. `placement` defaults to
    the one `config` gets in this process (`scores_test`: whether the caller scores the test set after, for the
    first line's plan). `observers` are told of every epoch's end; one that answers True ends
    training there, and the run finishes with the epochs it trained (phases not begun are skipped).
    """
    run = _Training(config, ModelFactory(config, placement or placement_for(config)), model, splits, directory,
                    stop_requested, observers)
    phases = kind_of(config).phases(config)
    progress = read_progress(run.state_dir, phases) if resume else {"phases_done": [], "records": {}}
    if resume:
        _resume_position(run, phases, progress)
    steps_per_epoch = batches_of(len(splits.y_train), config.train.batch_size)
    run.progress = RunProgress(sum(phase.epochs for phase in phases), steps_per_epoch, len(run.timer.seconds))
    print(what_it_will_do(config, phases, splits, steps_per_epoch, scores_test), file=sys.stderr)
    earlier_seconds = sum(run.timer.seconds)  # training done before an interruption still counts
    start = time.perf_counter()
    records, epochs_done = [], 0
    for phase in phases:
        if phase.name in progress["phases_done"]:
            _load_finished_phase(model, run.state_dir / f"after-{phase.name}.weights.h5")
            records.append(progress["records"][phase.name])
        else:
            run.progress.start_phase(phase.name if len(phases) > 1 else "")
            records.append(_fit_phase(run, phase, epochs_done, resume))
            _record_finished_phase(run, phase, records[-1], progress)
        epochs_done += records[-1].get("epochs", phase.epochs)
        if run.observed.ended_after is not None:
            break
    train_seconds = earlier_seconds + time.perf_counter() - start
    final = _save_final_model(run)
    return TrainingResult(final, epochs_done, run.checkpoint.best_epoch, train_seconds, run.timer.seconds, records,
                          cut_short=run.observed.ended_after is not None)


def what_it_will_do(config: RunConfig, phases: list[Phase], splits: Splits, steps_per_epoch: int,
                    scores_test: bool = True) -> str:
    """One line for the start of a run: the model, its epochs by phase, the steps each takes, the data."""
    epochs = sum(phase.epochs for phase in phases)
    by_phase = f" ({', '.join(f'{phase.name} {phase.epochs}' for phase in phases)})" if len(phases) > 1 else ""
    validation = f", validating on {len(splits.y_val):,}" if len(splits.y_val) else ", no validation set"
    return (f"training {kind_of(config).label(config)}: {epochs} epochs{by_phase} of {steps_per_epoch:,} steps "
            f"(batch {config.train.batch_size}) on {len(splits.y_train):,} training images{validation}; then "
            + (f"scoring {len(splits.y_test):,} test images" if scores_test else "not scoring the test set"))


class _Training:
    """What every step of one `train_model` call shares: the run, its model and data, and the callbacks that span
    its phases."""

    def __init__(self, config: RunConfig, factory: ModelFactory, model: keras.Model, splits: Splits, directory: Run,
                 stop_requested: Callable[[], bool], observers: Sequence[RunObserver] = ()):
        self.config, self.factory, self.model, self.splits, self.directory = config, factory, model, splits, directory
        self.stop_requested = stop_requested
        self.observed = TellObservers(observers)
        self.num_classes = len(splits.class_names)
        self.state_dir = directory.checkpoints_dir / RESUME_DIR
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.timer, self.nan_guard = EpochTimer(), StopOnNonFiniteLoss()
        self.progress: RunProgress | None = None  # made once the phases are known (train_model)
        self.checkpoint = BestCheckpoint(model, directory.checkpoints_dir / BEST_CHECKPOINT)
        self.augmentation = None
        self.features: dict[str, tuple] = {}  # the latest cached features, by the extractor that made them
        if config.data.flip or config.data.translate:
            self.augmentation = Augmentation(splits.x_train, config.train.seed, config.data.flip, config.data.translate)


def _resume_position(run: _Training, phases: list[Phase], progress: dict) -> None:
    """Find the epoch the saved state resumes at; cut history.csv back to it and take its timings and best epoch."""
    resume_epoch = 0
    for phase in phases:
        if phase.name not in progress["phases_done"]:
            resume_epoch = _backed_up_epoch(run.state_dir / phase.name, resume_epoch, phase.epochs) or resume_epoch
            break
        resume_epoch += phase.epochs
    run.timer.seconds = _restore_history(run.directory.history_path, resume_epoch, run.checkpoint)
    print(f"resuming at epoch {resume_epoch + 1}", file=sys.stderr)


def _fit_phase(run: _Training, phase: Phase, epochs_before: int, resume: bool) -> dict[str, object]:
    """Train one phase, from its saved state when resuming; returns its record for progress.json and metrics.json."""
    phase.prepare(run.model)
    start_epoch = (_backed_up_epoch(run.state_dir / phase.name, epochs_before, phase.epochs) if resume else None) \
        or epochs_before
    fit_model, x_train, x_val, augmentation = run.model, run.splits.x_train, run.splits.x_val, run.augmentation
    feature_seconds, feature_flops = None, 0
    if phase.cached_features:
        extractor, fit_model = run.factory.cached_feature_models(run.model, phase)
        x_train, x_val, augmentation, feature_seconds = _cached_features(run, extractor)
        if feature_seconds is not None:  # computed for this phase, not reused from the last
            feature_flops = forward_flops(extractor) * _feature_images(run)
    splits, num_classes = run.splits, run.num_classes
    batches = ShuffledBatches(x_train, splits.y_train, num_classes, run.config.train.batch_size, run.config.train.seed,
                              epoch=start_epoch, augmentation=augmentation)
    phase_steps = phase.epochs * len(batches)
    run.factory.compile(fit_model, phase.learning_rate, phase_steps)
    print(f"phase '{phase.name}': {phase.epochs} epochs at learning rate {phase.learning_rate:g}, "
          f"{trainable_parameters(fit_model):,} trainable parameters", file=sys.stderr)
    with run.factory.placement.scope():  # over several devices the input is cut into shards, and fit runs there
        fit_data, input_callbacks = fit_input(batches)
        fit_model.fit(
            fit_data,
            shuffle=False,  # the batches come in their own seeded order
            validation_data=validation_input(x_val, one_hot(splits.y_val, num_classes)) if len(splits.y_val) else None,
            validation_batch_size=run.config.train.evaluation_batch_size,
            initial_epoch=epochs_before,
            epochs=epochs_before + phase.epochs,
            callbacks=input_callbacks + _phase_callbacks(run, phase, phase_steps),
            verbose=0,  # RunProgress shows the whole run instead, epoch by epoch
        )
    if run.nan_guard.bad_batch is not None:
        raise CnnlabError(
            f"training diverged: loss became NaN or infinite in epoch {len(run.timer.seconds)}, batch "
            f"{run.nan_guard.bad_batch + 1} (try a lower --lr)"
        )
    if run.stop_requested():
        raise KeyboardInterrupt
    phase_epoch_seconds = run.timer.seconds[epochs_before:]
    epochs = (run.observed.ended_after or epochs_before + phase.epochs) - epochs_before  # fewer, if cut short
    return {
        "name": phase.name,
        "epochs": epochs,
        "learning_rate": phase.learning_rate,
        "trainable_parameters": trainable_parameters(fit_model),
        "seconds_per_epoch": round(float(np.mean(phase_epoch_seconds)), 2) if phase_epoch_seconds else None,
        "feature_cache_seconds": feature_seconds,
        # What the phase's recipe costs (models/flops.py): epochs repeated after a crash are not counted again
        "train_flops": training_step_flops(fit_model) * len(splits.y_train) * epochs + feature_flops,
        "validation_flops": forward_flops(fit_model) * len(splits.y_val) * epochs,
    }


def _phase_callbacks(run: _Training, phase: Phase, phase_steps: int) -> list[keras.callbacks.Callback]:
    """In order: lookahead first (the epoch's last pull lands before anything saves), then timing, the learning
    rate, the NaN guard, history, the best checkpoint, the resume state, the stop a Ctrl-C asked for once that
    state is saved, and the observers (told once all is saved)."""
    train = run.config.train
    callbacks = []
    if train.lookahead_every:
        callbacks.append(Lookahead(train.lookahead_every, phase_steps, scope=run.factory.placement.scope))
    callbacks += [run.timer, LearningRateLog(), run.nan_guard, HistoryFile(run.directory.history_path, run.timer),
                  run.progress]
    if len(run.splits.y_val):
        callbacks.append(run.checkpoint)  # before the backup: a kill between them repeats an epoch, loses none
    # Two generations of state: a kill in the middle of writing one leaves the other to resume from.
    callbacks.append(keras.callbacks.BackupAndRestore(
        str(run.state_dir / phase.name), save_freq=train.save_every_steps or "epoch",
        double_checkpoint=True, delete_checkpoint=False,
    ))
    callbacks += [StopWhenAsked(run.stop_requested), run.observed]
    if train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.directory.tensorboard_dir)))
    return callbacks


def _record_finished_phase(run: _Training, phase: Phase, record: dict, progress: dict) -> None:
    """Save the full model's weights after `phase` and mark it done, so that a resume skips it."""
    with atomic_path(run.state_dir / f"after-{phase.name}.weights.h5") as temporary:
        run.model.save_weights(temporary)
    progress["phases_done"].append(phase.name)
    progress["records"][phase.name] = record
    write_json(run.state_dir / PROGRESS, progress)


def _save_final_model(run: _Training) -> keras.Model:
    """Write model.keras from the best epoch (the last one where nothing was validated); return what was saved."""
    model = run.factory.load(run.checkpoint.path) if run.checkpoint.best_epoch is not None else run.model
    # What is saved is what gets scored: the test metrics describe exactly the model.keras that loads anywhere.
    model = portable_copy(model, kind_of(run.config))
    with atomic_path(run.directory.model_path) as temporary:
        model.save(temporary)
    return model


def read_progress(state_dir: Path, phases: list[Phase]) -> dict:
    """The resume state's record of finished phases: {"phases_done": [names], "records": {name: record}}.

    Written atomically by training itself, so anything malformed was damaged or edited since: an error naming the
    file rather than a resume from state that cannot be trusted.
    """
    path = state_dir / PROGRESS
    if not path.is_file():
        return {"phases_done": [], "records": {}}
    progress = read_json(path)
    names = [phase.name for phase in phases]
    done = progress.get("phases_done") if isinstance(progress, dict) else None
    records = progress.get("records") if isinstance(progress, dict) else None
    if not (isinstance(done, list) and done == names[: len(done)] and isinstance(records, dict)
            and all(_valid_record(records.get(name)) for name in done)):
        raise CnnlabError(f"{path} is damaged (its finished phases {done!r:.80} are not a start of {names} each "
                          "with its record); the run cannot be resumed from it")
    return progress


def _valid_record(record) -> bool:
    """A finished phase's record as `train_model` writes it, and as metrics.json's "phases" must hold it."""
    seconds = record.get("seconds_per_epoch") if isinstance(record, dict) else None
    return (isinstance(record, dict) and isinstance(record.get("name"), str)
            and type(record.get("trainable_parameters")) is int and record["trainable_parameters"] >= 0
            and (seconds is None or (type(seconds) in (int, float) and 0 <= seconds < float("inf"))))


def _load_finished_phase(model: keras.Model, weights: Path) -> None:
    try:
        model.load_weights(weights)
    except Exception as exc:  # h5py and Keras raise OSError, ValueError, KeyError and more for a damaged file
        raise CnnlabError(f"cannot read the saved weights {weights}: {first_line(exc)}") from None


BACKUP_GENERATIONS = (("latest.weights.h5", "training_metadata.json"),
                      ("latest.weights.h5.bkp", "training_metadata.json.bkp"))  # Keras BackupAndRestore's names


def _backed_up_epoch(backup_dir: Path, phase_start: int, phase_epochs: int) -> int | None:
    """The epoch Keras's BackupAndRestore will restart at, after making sure what it will read is whole.

    A kill while Keras writes its state can leave a truncated weights file or metadata. The newest whole generation
    is put where Keras looks; if neither is whole, the phase starts again from its beginning.
    """
    import h5py

    for weights, metadata in BACKUP_GENERATIONS:
        try:
            epoch = json.loads((backup_dir / metadata).read_text(encoding="utf-8"))["epoch"]
            with h5py.File(backup_dir / weights, "r"):
                pass
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if type(epoch) is not int or not phase_start <= epoch <= phase_start + phase_epochs:
            continue  # not an epoch of this phase: damaged
        if _written_after(backup_dir / weights, backup_dir / metadata):
            continue  # killed between Keras's two writes: these weights are one save ahead of the epoch named
        if weights != BACKUP_GENERATIONS[0][0]:
            for older, newer in zip((weights, metadata), BACKUP_GENERATIONS[0]):
                shutil.copyfile(backup_dir / older, backup_dir / newer)
        return epoch or None
    shutil.rmtree(backup_dir, ignore_errors=True)
    return None


def _written_after(first: Path, second: Path) -> bool:
    """Whether `first` was last written after `second` (Keras writes the weights, then the metadata naming them)."""
    return first.stat().st_mtime_ns > second.stat().st_mtime_ns


def _restore_history(history_csv: Path, resume_epoch: int, checkpoint: BestCheckpoint) -> list[float]:
    """Cut history.csv back to the epochs before `resume_epoch`; return their durations and re-arm the checkpoint
    with the best validation accuracy among them."""
    if not history_csv.is_file():
        return []
    rows = [row for row in read_rows(history_csv) if int(row["epoch"]) < resume_epoch]
    write_rows(history_csv, rows, list(rows[0]) if rows else [])
    for row in rows:
        accuracy = history_number(row.get("val_accuracy"))
        if accuracy > checkpoint.best:
            checkpoint.best, checkpoint.best_epoch = accuracy, int(row["epoch"]) + 1
    return [0.0 if np.isnan(seconds) else seconds for seconds in (history_number(row.get("seconds")) for row in rows)]


def _feature_images(run: _Training) -> int:
    """How many images go through a phase's frozen layers once: training (and their mirrors), validation."""
    return len(run.splits.y_train) * (2 if run.config.data.flip else 1) + len(run.splits.y_val)


def _cached_features(run: _Training, extractor: keras.Model):
    """The training and validation images through `extractor`, computed once per phase (a phase that cuts the model
    where the last one did reuses them), with the flips `data.flip` asks for served from the mirror images' features;
    and the seconds that took, None where they were already there."""
    if extractor.name in run.features:
        return *run.features[extractor.name], None
    run.features.clear()  # another phase's features: not needed again, and they can be large
    started = time.perf_counter()
    splits, flip = run.splits, run.config.data.flip
    count = _feature_images(run)
    print(f"computing the frozen layers' features once for {count:,} images" + (" (and mirror images)" if flip else ""),
          file=sys.stderr)
    batch = max(run.config.train.batch_size, 128)
    bar = PassProgress("frozen layers' features", batches_of(count, batch))
    with run.factory.placement.scope():  # over several devices the images are sharded like fit's
        train_features = extractor.predict(splits.x_train, batch_size=batch, verbose=0, callbacks=[bar])
        val_features = (extractor.predict(splits.x_val, batch_size=batch, verbose=0, callbacks=[bar])
                        if len(splits.y_val) else splits.x_val)
        views = None
        if flip:
            mirrored = extractor.predict(splits.x_train[:, :, ::-1], batch_size=batch, verbose=0, callbacks=[bar])
            views = MirroredViews(train_features, mirrored, run.config.train.seed)
    bar.close()
    run.features[extractor.name] = (train_features, val_features, views)
    return train_features, val_features, views, round(time.perf_counter() - started, 2)
