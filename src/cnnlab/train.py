"""Training: compile the recipe, fit with Keras callbacks, keep the best epoch, save the model atomically.

The recipe is the tutorial's: Adam, categorical cross-entropy on one-hot labels, accuracy. The best epoch by
validation accuracy is checkpointed and becomes the run's `model.keras`; `history.csv` gets one row per epoch.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from cnnlab import rundir
from cnnlab.config import RunConfig
from cnnlab.data import Splits
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model

BEST_CHECKPOINT = "best.keras"


@dataclass
class TrainingResult:
    model: keras.Model
    epochs: int
    best_epoch: int | None
    train_seconds: float
    epoch_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.train_seconds, 2),
            "seconds_per_epoch": round(float(np.mean(self.epoch_seconds)), 2) if self.epoch_seconds else None,
            "epoch_seconds": [round(seconds, 2) for seconds in self.epoch_seconds],
            "parameters": int(self.model.count_params()),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in self.model.trainable_weights)),
        }


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, validation included, as a user would time it."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


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


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return keras.utils.to_categorical(labels, num_classes).astype("float32")


def train_model(config: RunConfig, splits: Splits, run_dir: Path) -> TrainingResult:
    keras.utils.set_random_seed(config.train.seed)
    num_classes = len(splits.class_names)
    model = build_model(config.model, num_classes, image_shape=splits.x_train.shape[1:])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.train.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    has_validation = len(splits.y_val) > 0
    best_path = Path(run_dir) / rundir.CHECKPOINTS / BEST_CHECKPOINT
    timer, nan_guard = EpochTimer(), StopOnNonFiniteLoss()
    callbacks = [timer, nan_guard, keras.callbacks.CSVLogger(str(Path(run_dir) / rundir.HISTORY))]
    if has_validation:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_accuracy", mode="max", save_best_only=True)
        )
    if config.train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(Path(run_dir) / "tensorboard")))

    start = time.perf_counter()
    history = model.fit(
        splits.x_train,
        one_hot(splits.y_train, num_classes),
        batch_size=config.train.batch_size,
        epochs=config.train.epochs,
        validation_data=(splits.x_val, one_hot(splits.y_val, num_classes)) if has_validation else None,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,  # a live bar on a terminal, one line per epoch in logs
    )
    train_seconds = time.perf_counter() - start
    if nan_guard.bad_batch is not None:
        epoch = len(timer.seconds)
        raise CnnlabError(
            f"training diverged: loss became NaN or infinite in epoch {epoch}, batch {nan_guard.bad_batch + 1} "
            "(try a lower --lr)"
        )

    best_epoch = None
    if has_validation and best_path.is_file():
        best_epoch = int(np.argmax(history.history["val_accuracy"])) + 1
        model = keras.saving.load_model(best_path)
    with rundir.atomic_path(Path(run_dir) / rundir.MODEL) as temporary:
        model.save(temporary)
    return TrainingResult(model, len(timer.seconds), best_epoch, train_seconds, timer.seconds)
