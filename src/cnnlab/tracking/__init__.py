"""Experiment trackers, fed as runs train (`training.observer.RunObserver`): MLflow (`--track mlflow`, the optional
extra `cnnlab[track]`) and TensorBoard's HParams dashboard (with `--tensorboard`). The run directory stays the source
of truth: a tracker mirrors it, and one that is down or misconfigured is a warning, never a failed or slower run."""

from __future__ import annotations

from cnnlab.common.errors import CnnlabError, install_hint

TRACKERS = ("mlflow",)


def trackers(names: list[str]) -> tuple:
    """The trackers `--track` names (checked, and their library installed), ready to be told of runs."""
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise CnnlabError(f"--track: unknown tracker {unknown[0]!r:.40} (one of: {', '.join(TRACKERS)})")
    if "mlflow" not in names:
        return ()
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise CnnlabError(f"--track mlflow needs MLflow: {install_hint('track')}")
    from cnnlab.tracking.mlflow import MlflowTracker

    return (MlflowTracker(),)
