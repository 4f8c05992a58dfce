"""`Run`: a run directory as an object, and the one reader and writer of its files.

Every command goes through it: `cnnlab train` creates one (`Run.create`), `train --resume` opens an unfinished one
(`Run.open`), and evaluate, report, predict, export and serve open a finished one (`Run.open_finished`). A `Run`
reads its config, metrics, history and test predictions with their integrity checks, records and checks the data it
was trained on, and loads its model; the file names and the locking rules are `runs.rundir`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cnnlab.common.errors import CnnlabError, one_line
from cnnlab.common.files import atomic_path, read_json, write_json
from cnnlab.config import RunConfig, config_from_dict
from cnnlab.data import Dataset, load_dataset
from cnnlab.runs import provenance, rundir
from cnnlab.runs.history import read_history
from cnnlab.runs.metrics import read_metrics
from cnnlab.runs.predictions import read_predictions

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class RunSettings:
    """What a finished run's model needs beside it to answer as its test accuracy says."""

    class_names: tuple[str, ...]
    augmentation: int  # the run's test-time augmentation level
    resize: str  # how its training images were brought to size
    image_size: tuple[int, int]  # (height, width) of the images its model takes
    metrics: dict


class Run:
    """One run directory. Opening checks what the command needs of it; reading a file checks the file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- opening ------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> Run:
        """A new, empty run directory; an existing non-empty folder is never reused."""
        return cls(rundir.create_run_dir(path))

    @classmethod
    def open(cls, path: Path) -> Run:
        """A run directory in any state (to resume it)."""
        run = cls(path)
        if not run.has_config() or not run.has_status():
            if run.path.is_dir() and rundir.never_started(run.path):
                raise CnnlabError(f"{run.path} holds no run: its start failed before anything was written; start it "
                                  f"again with --out {run.path}")
            raise CnnlabError(f"{run.path} is not a cnnlab run directory (no {rundir.STATUS} or {rundir.CONFIG})")
        return run

    @classmethod
    def open_finished(cls, path: Path) -> Run:
        """A finished run with its model; anything else is refused, saying what is wrong."""
        if not Path(path).is_dir():
            raise CnnlabError(f"run directory not found: {path}")
        run = cls.open(path)
        status = rundir.read_status(run.path)
        if status["state"] != "finished":
            reason = f": {status['reason']}" if status["reason"] else ""
            raise CnnlabError(f"{run.path} is not a finished run (status: {status['state']}{reason})")
        if not run.model_path.is_file():
            raise CnnlabError(f"{run.path} has no {rundir.MODEL}")
        return run

    # ---- where things are ---------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        return self.path / rundir.MODEL

    @property
    def history_path(self) -> Path:
        return self.path / rundir.HISTORY

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / rundir.CHECKPOINTS

    @property
    def figures_dir(self) -> Path:
        return self.path / rundir.FIGURES

    @property
    def learning_curves_path(self) -> Path:
        return self.figures_dir / rundir.LEARNING_CURVES_PNG

    @property
    def confusion_matrix_path(self) -> Path:
        return self.figures_dir / rundir.CONFUSION_MATRIX_PNG

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / rundir.TENSORBOARD

    @property
    def export_dir(self) -> Path:
        return self.path / rundir.EXPORT

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Held while writing: a second writer, in this process or another, is refused."""
        return rundir.locked(self.path)

    # ---- config and status --------------------------------------------------------------------------------------

    @functools.cached_property
    def config(self) -> RunConfig:
        """The resolved configuration the run was trained with (written once, atomically: safe to read unlocked)."""
        return config_from_dict(read_json(self.path / rundir.CONFIG))

    def write_config(self, config: RunConfig, data: Dataset) -> RunConfig:
        """config.json: `config` with its data source and image size as `data` resolved them (the download's path, the
        source's own size), so that every later command loads exactly this data; returns what was written."""
        resolved = dataclasses.replace(config.data, source=data.record.path, image_size=data.record.image_size)
        config = dataclasses.replace(config, data=resolved)
        write_json(self.path / rundir.CONFIG, config.to_dict())
        self.__dict__["config"] = config
        return config

    def has_config(self) -> bool:
        return (self.path / rundir.CONFIG).is_file()

    def has_status(self) -> bool:
        return (self.path / rundir.STATUS).is_file()

    def state(self) -> str:
        """"running", "finished", "failed" or "stopped" (by a signal, to resume)."""
        return rundir.read_status(self.path)["state"]

    def finished_at(self) -> str | None:
        """When the run last changed state (its finish, for a finished run), as status.json records it."""
        self.state()  # a damaged status.json is refused in one line
        when = read_json(self.path / rundir.STATUS).get("time")
        return one_line(when) if isinstance(when, str) else None

    def set_status(self, state: str, reason: str | None = None) -> None:
        rundir.set_status(self.path, state, reason)

    def record_failure(self, exc: BaseException) -> None:
        rundir.record_failure(self.path, exc)

    # ---- results ------------------------------------------------------------------------------------------------

    def has_metrics(self) -> bool:
        return (self.path / rundir.METRICS).is_file()

    def metrics(self, require_test: bool = True) -> dict:
        """metrics.json, checked to hold what later commands use (`runs.metrics.read_metrics`); a run not scored on
        the test set (a search's trial) is refused unless `require_test` is false."""
        return read_metrics(self.path / rundir.METRICS, require_test)

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / rundir.METRICS, metrics)

    def history(self) -> dict[str, list[float]]:
        """history.csv as columns; empty for a run without one."""
        return read_history(self.history_path) if self.history_path.is_file() else {}

    def best_val_accuracy(self) -> float | None:
        """The best validation accuracy of any epoch (the epoch its model.keras keeps); None without validation."""
        scores = [value for value in self.history().get("val_accuracy", []) if np.isfinite(value)]
        return max(scores) if scores else None

    def scores(self) -> tuple[dict, np.ndarray, np.ndarray]:
        """(metrics, class probabilities as float32, true labels as int) of the run's test set, each file checked
        against the others."""
        predictions = self.path / rundir.TEST_PREDICTIONS
        metrics = self.metrics() if self.has_metrics() else None  # first: a search's trial says why it has none
        if metrics is None or not predictions.is_file():
            raise CnnlabError(f"{self.path} has no test results (run `cnnlab evaluate {self.path}` first)")
        probabilities, labels = read_predictions(predictions, metrics, self.path / rundir.METRICS)
        return metrics, probabilities.astype(np.float32), labels.astype(int)

    def write_predictions(self, probabilities: np.ndarray, labels: np.ndarray) -> None:
        """Every test image's class probabilities (float16) and true label: for reports, every model's answers side
        by side without running the models again."""
        with atomic_path(self.path / rundir.TEST_PREDICTIONS) as temporary:
            np.savez(temporary, probabilities=probabilities.astype(np.float16), labels=labels.astype(np.uint8))

    def settings(self) -> RunSettings:
        """What its model needs beside it to answer as its test accuracy says; read without starting Keras."""
        metrics = self.metrics()
        return RunSettings(
            class_names=tuple(metrics["data"]["classes"]),
            augmentation=metrics.get("test_time_augmentation", 0),  # runs without test-time augmentation have none
            resize=self.config.data.resize,
            image_size=(self.config.data.image_size,) * 2,  # written resolved: the size of the data it trained on
            metrics=metrics,
        )

    # ---- data and model -----------------------------------------------------------------------------------------

    def record_data(self, dataset: Dataset) -> None:
        """Write what the run trains on (source.json, and the test and skipped files lists)."""
        provenance.record_source(self.path, dataset)

    def check_data(self, dataset: Dataset) -> None:
        """Refuse `dataset` unless it is the data the run was trained on."""
        provenance.check_unchanged(self.path, dataset)

    def load_data(self, source: str | None = None, sha256: str | None = None) -> Dataset:
        """The data the run was trained on, checked unchanged; or, named on purpose, another `source` (a copy,
        another test set), scored as it is. A `sha256` alone checks the run's own source against that hash."""
        data_config = self.config.data
        if source or sha256:
            data_config = dataclasses.replace(data_config, source=source or data_config.source, sha256=sha256)
        data = load_dataset(data_config, self.config.train.seed)
        if not source:
            self.check_data(data)
        return data

    def load_model(self, class_names: Sequence[str]) -> keras.Model:
        """The run's model.keras, read safely (sizes checked first, no code runs), and checked to answer for
        `class_names` (the run's own, or the data's): one probability each, or every label after the count is
        wrong."""
        from cnnlab.models.saving import load_model

        model = load_model(self.model_path)
        outputs = model.output_shape[-1]
        if outputs != len(class_names):
            raise CnnlabError(f"{self.model_path} answers for {outputs} classes, but there are {len(class_names)} "
                              f"class names ({', '.join(map(str, class_names[:3]))}{', ...' * (len(class_names) > 3)})"
                              "; the model and the run's classes do not belong together")
        return model


def load_run_model(run_dir: Path) -> keras.Model:
    """The model of the run in `run_dir`, read safely and checked against its class names."""
    run = Run(run_dir)
    return run.load_model(run.settings().class_names)
