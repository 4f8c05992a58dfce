"""`HParamsSummary`: a run's settings and final scores for TensorBoard's HParams dashboard, in
RUN_DIR/tensorboard/hparams/, beside the per-epoch logs that `--tensorboard` writes through Keras.

Written with TensorBoard's own protobufs and event-file writer, which need no TensorFlow: the same on every backend.
`tensorboard --logdir` over a search folder (or any folder of runs) shows every run's settings against its scores.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from cnnlab.runs.run import Run
from cnnlab.tracking.params import run_params
from cnnlab.training.observer import RunObserver

HPARAMS_DIR = "hparams"  # under the run's tensorboard/
SCORES = ("test_accuracy", "test_loss", "best_val_accuracy", "train_seconds")


class HParamsSummary(RunObserver):
    """At a run's end: its settings (each a dotted name, as --set takes it) and its final scores, as one HParams
    session of the run."""

    def run_started(self, run_dir: Path, config, resumed: bool) -> None:
        self.config = config

    def run_ended(self, run_dir: Path, state: str) -> None:
        run = Run(run_dir)
        if state != "finished" or not run.has_metrics():
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import summary_v2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        metrics = run.metrics(require_test=False)
        writer = EventFileWriter(str(run.tensorboard_dir / HPARAMS_DIR))
        try:
            now = time.time()
            session = summary_v2.hparams_pb(run_params(self.config), trial_id=run.name, start_time_secs=now)
            writer.add_event(event_pb2.Event(wall_time=now, step=0, summary=session))
            scores = [summary_pb2.Summary.Value(tag=name, simple_value=float(metrics[name])) for name in SCORES
                      if isinstance(metrics.get(name), (int, float)) and math.isfinite(metrics[name])]
            writer.add_event(event_pb2.Event(wall_time=now, step=0, summary=summary_pb2.Summary(value=scores)))
        finally:
            writer.close()
