"""A whole run, start to finish: data -> splits -> train -> evaluate -> figures, recorded in a run directory.

`train_run` is what `cnnlab train` does; `evaluate_run` is `cnnlab evaluate`, which re-scores a finished run (on its
own data source or another copy) and redraws its figures.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from cnnlab import figures, rundir, system_info
from cnnlab.config import RunConfig, config_from_dict
from cnnlab.data import Cifar10, load_cifar10, make_splits
from cnnlab.errors import CnnlabError
from cnnlab.evaluate import metrics_from_probabilities, predict_probabilities, read_history

LEARNING_CURVES_PNG = "learning_curves.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"


def train_run(config: RunConfig, out: Path | None = None) -> Path:
    """Train and evaluate one model; return its run directory. Data problems surface before anything is written."""
    data = load_cifar10(config.data.source, config.data.sha256)
    splits = make_splits(data, config.data.val_size, config.train.seed, config.data.train_limit)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, source=data.source))
    run_dir = rundir.create_run_dir(out or rundir.default_run_dir(config.preset, config.model.name))
    rundir.write_json(run_dir / rundir.CONFIG, config.to_dict())
    rundir.set_status(run_dir, "running")
    print(f"run directory: {run_dir}", file=sys.stderr)
    try:
        from cnnlab.train import train_model  # Keras is imported only once there is work for it

        result = train_model(config, splits, run_dir)
        metrics = {
            **result.summary(),
            "train_images": int(len(splits.y_train)),
            "val_images": int(len(splits.y_val)),
            "data": _data_record(data),
        }
        _evaluate_and_record(run_dir, result.model, data, metrics, batch_size=config.train.batch_size)
    except KeyboardInterrupt:
        rundir.set_status(run_dir, "failed", "interrupted by the user")
        raise
    except Exception as exc:
        rundir.set_status(run_dir, "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    rundir.set_status(run_dir, "finished")
    return run_dir


def evaluate_run(run_dir: Path, data_source: str | None = None, sha256: str | None = None) -> dict[str, object]:
    """Re-score a finished run on the test set and redraw its figures; returns the updated metrics."""
    run_dir = rundir.require_finished(run_dir)
    config = config_from_dict(rundir.read_json(run_dir / rundir.CONFIG))
    data = load_cifar10(data_source or config.data.source, sha256 if data_source else config.data.sha256)
    model = load_run_model(run_dir)
    metrics_file = run_dir / rundir.METRICS
    metrics = rundir.read_json(metrics_file) if metrics_file.is_file() else {}
    metrics["data"] = _data_record(data)
    return _evaluate_and_record(run_dir, model, data, metrics, batch_size=config.train.batch_size)


def load_run_model(run_dir: Path):
    import keras

    path = Path(run_dir) / rundir.MODEL
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors and more for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CnnlabError(f"cannot load {path}: {reason}") from None


def _evaluate_and_record(run_dir: Path, model, data: Cifar10, metrics: dict, batch_size: int) -> dict:
    probabilities = predict_probabilities(model, data.x_test, batch_size=max(batch_size, 256))
    metrics.update(metrics_from_probabilities(probabilities, data.y_test, data.class_names))
    metrics["versions"] = system_info.library_versions()
    metrics["hardware"] = system_info.hardware()
    figures_dir = run_dir / rundir.FIGURES
    figures_dir.mkdir(exist_ok=True)
    history_file = run_dir / rundir.HISTORY
    if history_file.is_file():
        figures.plot_learning_curves(read_history(history_file), figures_dir / LEARNING_CURVES_PNG, run_dir.name)
    figures.plot_confusion_matrix(
        metrics["confusion_matrix"], data.class_names, figures_dir / CONFUSION_MATRIX_PNG, f"{run_dir.name}: test set"
    )
    rundir.write_json(run_dir / rundir.METRICS, metrics)
    return metrics


def _data_record(data: Cifar10) -> dict[str, object]:
    return {"source": data.source, "sha256": data.sha256, "hash_status": data.hash_status, "classes": data.class_names}
