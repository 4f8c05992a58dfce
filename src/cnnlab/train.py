"""Training: the recipe in phases, Keras `fit` with callbacks, the best epoch kept, every save atomic.

The CNN and the fast net train in one phase. VGG16 trains in two, as transfer learning is done in practice: phase 1 fits the new head
with the base frozen (optionally on base features computed once per image, which gives the same head far faster);
phase 2 unfreezes the base's last conv blocks and trains on at a much lower learning rate. Every phase is compiled
by `recipe.py` (the tutorial's presets: Adam and categorical cross-entropy). `history.csv` gets one row per epoch across phases, and the best
epoch by validation accuracy becomes the run's `model.keras`.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from cnnlab import rundir
from cnnlab.backends import fit_input
from cnnlab.config import RunConfig
from cnnlab.data import Splits
from cnnlab.data.augment import Augmentation
from cnnlab.data.batches import ShuffledBatches, one_hot
from cnnlab.errors import CnnlabError, first_line
from cnnlab.evaluate import history_number
from cnnlab.models import vgg16
from cnnlab.models.saving import load_model, portable_copy
from cnnlab.recipe import Lookahead, compile_for_phase

BEST_CHECKPOINT = "best.keras"
RESUME_DIR = "resume"  # under checkpoints/: Keras BackupAndRestore state per phase, and finished phases
PROGRESS = "progress.json"


@dataclass
class Phase:
    name: str
    epochs: int
    learning_rate: float
    prepare: Callable[[keras.Model], None]  # sets which layers train in this phase
    cached_features: bool = False


@dataclass
class TrainingResult:
    model: keras.Model
    epochs: int
    best_epoch: int | None
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    phases: list[dict[str, object]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.train_seconds, 2),
            "seconds_per_epoch": round(float(np.mean(self.epoch_seconds)), 2) if self.epoch_seconds else None,
            "epoch_seconds": [round(seconds, 2) for seconds in self.epoch_seconds],
            "phases": self.phases,
            "parameters": int(self.model.count_params()),
            # The most any phase trained: the saved model's own flags depend on which phase had the best epoch.
            "trainable_parameters": max(
                (phase["trainable_parameters"] for phase in self.phases), default=trainable_parameters(self.model)
            ),
        }


def trainable_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def phases_for(config: RunConfig) -> list[Phase]:
    if config.model != "vgg16":
        return [Phase("train", config.train.epochs, config.train.learning_rate, prepare=lambda model: None)]
    settings = config.vgg16
    phases = [
        Phase("head", config.train.epochs, config.train.learning_rate, prepare=vgg16.freeze_base,
              cached_features=settings.feature_cache),
    ]
    if settings.unfreeze_blocks and settings.finetune_epochs:
        phases.append(
            Phase("finetune", settings.finetune_epochs, settings.finetune_learning_rate,
                  prepare=lambda model: vgg16.freeze_base(model, settings.unfreeze_blocks))
        )
    return phases


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
        if logs is not None:
            logs["seconds"] = self.seconds[-1]  # into history.csv, so a resumed run keeps its earlier timings


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


class BestCheckpoint(keras.callbacks.Callback):
    """Save `full_model` whenever validation accuracy improves, atomically.

    Unlike keras.callbacks.ModelCheckpoint it saves the full model even while `fit` runs on the head alone (cached
    features), and a kill mid-save never leaves a damaged checkpoint behind.
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
            with rundir.atomic_path(self.path) as temporary:
                self.full_model.save(temporary)


class HistoryFile(keras.callbacks.Callback):
    """history.csv, one row per epoch, rewritten whole and atomically at each epoch end.

    Keras's CSVLogger appends to the file in place, so a kill during its write leaves half a line; here a reader,
    or a resumed run, sees the history before the epoch or after it. Columns as CSVLogger writes them: "epoch",
    then the logged values by name, "NA" where an epoch has none.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        rows = _read_rows(self.path)
        rows.append({"epoch": epoch, **{key: float(value) for key, value in sorted((logs or {}).items())}})
        columns = list(dict.fromkeys(key for row in rows for key in row))
        _write_rows(self.path, rows, columns)


def _read_rows(history_csv: Path) -> list[dict[str, str]]:
    if not history_csv.is_file():
        return []
    try:
        with open(history_csv, newline="", encoding="utf-8") as handle:
            return [row for row in csv.DictReader(handle) if _complete_row(row)]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:  # e.g. the zero-filled blocks a power cut can leave
        raise CnnlabError(f"{history_csv} is damaged ({first_line(exc)})") from None


def _write_rows(history_csv: Path, rows: list[dict], columns: list[str]) -> None:
    with rundir.atomic_path(history_csv) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            if rows:
                writer = csv.DictWriter(handle, fieldnames=columns, restval="NA")
                writer.writeheader()
                writer.writerows(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Training


def train_model(
    config: RunConfig, model: keras.Model, splits: Splits, run_dir: Path, resume: bool = False,
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainingResult:
    """Train `model` (built by the caller, seeded) through the phases of `config`; save the best to model.keras.

    State is saved every epoch (and every `save_every_steps` steps): Keras's BackupAndRestore keeps each phase's
    weights, optimizer and epoch; a finished phase leaves the full model's weights. With `resume=True`, finished
    phases are skipped, the phase in progress continues from its last saved state, and history.csv is cut back to
    the epochs that state includes, so that every epoch appears once. When `stop_requested()` turns true, training
    ends at the next epoch end, after its state is saved, by raising KeyboardInterrupt.
    """
    run_dir = Path(run_dir)
    num_classes = len(splits.class_names)
    has_validation = len(splits.y_val) > 0
    timer, nan_guard = EpochTimer(), StopOnNonFiniteLoss()
    checkpoint = BestCheckpoint(model, run_dir / rundir.CHECKPOINTS / BEST_CHECKPOINT)
    state_dir = run_dir / rundir.CHECKPOINTS / RESUME_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    phases = phases_for(config)
    progress = read_progress(state_dir, phases) if resume else {"phases_done": [], "records": {}}
    augmentation = None
    if config.data.flip or config.data.translate:
        augmentation = Augmentation(splits.x_train, config.train.seed, config.data.flip, config.data.translate)
    if resume:
        resume_epoch = 0
        for phase in phases:
            if phase.name not in progress["phases_done"]:
                resume_epoch = _backed_up_epoch(state_dir / phase.name, resume_epoch, phase.epochs) or resume_epoch
                break
            resume_epoch += phase.epochs
        timer.seconds = _restore_history(run_dir / rundir.HISTORY, resume_epoch, checkpoint)
        print(f"resuming at epoch {resume_epoch + 1}", file=sys.stderr)
    earlier_seconds = sum(timer.seconds)  # training done before an interruption still counts
    start = time.perf_counter()
    phase_records, epochs_done = [], 0
    for phase in phases:
        if phase.name in progress["phases_done"]:
            _load_finished_phase(model, state_dir / f"after-{phase.name}.weights.h5")
            phase_records.append(progress["records"][phase.name])
            epochs_done += phase.epochs
            continue
        phase.prepare(model)
        start_epoch = (_backed_up_epoch(state_dir / phase.name, epochs_done, phase.epochs) if resume else None) \
            or epochs_done
        epochs_before = epochs_done
        fit_model, x_train, x_val, feature_seconds = model, splits.x_train, splits.x_val, None
        if phase.cached_features:
            feature_start = time.perf_counter()
            fit_model, x_train, x_val = _cached_head(model, splits, config.train.batch_size)
            feature_seconds = round(time.perf_counter() - feature_start, 2)
        batches = ShuffledBatches(x_train, splits.y_train, num_classes, config.train.batch_size, config.train.seed,
                                  epoch=start_epoch, augmentation=augmentation if x_train is splits.x_train else None)
        phase_steps = phase.epochs * len(batches)
        compile_for_phase(fit_model, config, phase.learning_rate, phase_steps)
        callbacks = [timer, nan_guard, HistoryFile(run_dir / rundir.HISTORY)]
        if has_validation:
            callbacks.append(checkpoint)  # before the backup: a kill between them repeats an epoch, loses none
        # Two generations of state: a kill in the middle of writing one leaves the other to resume from.
        callbacks.append(keras.callbacks.BackupAndRestore(
            str(state_dir / phase.name), save_freq=config.train.save_every_steps or "epoch",
            double_checkpoint=True, delete_checkpoint=False,
        ))
        callbacks.append(StopWhenAsked(stop_requested))
        if config.train.lookahead_every:
            callbacks.insert(0, Lookahead(config.train.lookahead_every, phase_steps))
        if config.train.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
        print(f"phase '{phase.name}': {phase.epochs} epochs at learning rate {phase.learning_rate:g}, "
              f"{trainable_parameters(fit_model):,} trainable parameters", file=sys.stderr)
        fit_data, input_callbacks = fit_input(batches)
        fit_model.fit(
            fit_data,
            shuffle=False,  # the batches come in their own seeded order
            validation_data=(x_val, one_hot(splits.y_val, num_classes)) if has_validation else None,
            initial_epoch=epochs_done,
            epochs=epochs_done + phase.epochs,
            callbacks=input_callbacks + callbacks,
            verbose=1 if sys.stdout.isatty() else 2,  # a live bar on a terminal, one line per epoch in logs
        )
        if nan_guard.bad_batch is not None:
            raise CnnlabError(
                f"training diverged: loss became NaN or infinite in epoch {len(timer.seconds)}, batch "
                f"{nan_guard.bad_batch + 1} (try a lower --lr)"
            )
        if stop_requested():
            raise KeyboardInterrupt
        epochs_done += phase.epochs
        phase_epoch_seconds = timer.seconds[epochs_before:]
        record = {
            "name": phase.name,
            "epochs": phase.epochs,
            "learning_rate": phase.learning_rate,
            "trainable_parameters": trainable_parameters(fit_model),
            "seconds_per_epoch": round(float(np.mean(phase_epoch_seconds)), 2) if phase_epoch_seconds else None,
            "feature_cache_seconds": feature_seconds,
        }
        phase_records.append(record)
        with rundir.atomic_path(state_dir / f"after-{phase.name}.weights.h5") as temporary:
            model.save_weights(temporary)
        progress["phases_done"].append(phase.name)
        progress["records"][phase.name] = record
        rundir.write_json(state_dir / PROGRESS, progress)
    train_seconds = earlier_seconds + time.perf_counter() - start

    if checkpoint.best_epoch is not None:
        model = load_model(checkpoint.path)
    # What is saved is what gets scored: the test metrics describe exactly the model.keras that loads anywhere.
    model = portable_copy(model)
    with rundir.atomic_path(run_dir / rundir.MODEL) as temporary:
        model.save(temporary)
    return TrainingResult(model, epochs_done, checkpoint.best_epoch, train_seconds, timer.seconds, phase_records)


def read_progress(state_dir: Path, phases: list[Phase]) -> dict:
    """The resume state's record of finished phases: {"phases_done": [names], "records": {name: record}}.

    Written atomically by training itself, so anything malformed was damaged or edited since: an error naming the
    file rather than a resume from state that cannot be trusted.
    """
    path = state_dir / PROGRESS
    if not path.is_file():
        return {"phases_done": [], "records": {}}
    progress = rundir.read_json(path)
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
    rows = [row for row in _read_rows(history_csv) if int(row["epoch"]) < resume_epoch]
    _write_rows(history_csv, rows, list(rows[0]) if rows else [])
    for row in rows:
        accuracy = history_number(row.get("val_accuracy"))
        if accuracy > checkpoint.best:
            checkpoint.best, checkpoint.best_epoch = accuracy, int(row["epoch"]) + 1
    return [0.0 if np.isnan(seconds) else seconds for seconds in (history_number(row.get("seconds")) for row in rows)]


def _complete_row(row: dict) -> bool:
    """False for the half-written last line a kill can leave in history.csv."""
    try:
        int(row["epoch"])
        return all(value not in (None, "") for value in row.values())
    except (KeyError, TypeError, ValueError):
        return False


def _cached_head(model: keras.Model, splits: Splits, batch_size: int):
    """The head alone, and the base's features for the training and validation images, computed once."""
    extractor = vgg16.feature_extractor(model)
    print(f"computing VGG16 features once for {len(splits.y_train) + len(splits.y_val):,} images", file=sys.stderr)
    batch = max(batch_size, 128)
    train_features = extractor.predict(splits.x_train, batch_size=batch, verbose=0)
    val_features = extractor.predict(splits.x_val, batch_size=batch, verbose=0) if len(splits.y_val) else splits.x_val
    return vgg16.head_model(model), train_features, val_features
