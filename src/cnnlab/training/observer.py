"""`RunObserver`: what sees a run from outside as it trains, without a say in how it trains but one: when to end.

An experiment tracker (`cnnlab.tracking`) records each epoch's values as they come; a hyperparameter search
(`cnnlab.tuning`) reports them to its pruner, which may end a trial that is doing worse than the others. Keras-free,
so that an observer can be built before Keras is imported.
"""

from __future__ import annotations

from pathlib import Path


class RunObserver:
    """Told of a run's start, of each epoch's end and of the run's end; does nothing unless a subclass does."""

    def run_started(self, run_dir: Path, config, resumed: bool) -> None:
        """Training of `config` into `run_dir` starts (`resumed`: continues from the run's saved state)."""

    def epoch_ended(self, epoch: int, logs: dict[str, float]) -> bool:
        """Epoch `epoch` (counted from 1 across the run's phases) ended, its state saved, with the values Keras
        logged (loss, accuracy, val_loss, val_accuracy, learning_rate). True ends training here: the run then finishes
        as usual, from its best epoch so far, with the epochs it trained."""
        return False

    def run_ended(self, run_dir: Path, state: str) -> None:
        """The run ended in `state` ("finished", "failed" or "stopped"); its directory holds all it wrote."""

    def report_written(self, report_dir: Path, run_dirs: list[Path]) -> None:
        """A report on `run_dirs` (runs this observer saw) was written into `report_dir`."""
