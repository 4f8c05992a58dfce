"""What a run shows while it trains: how long it should take, and where it is.

`RunProgress` replaces Keras's own epoch printing for the whole run, across phases: an estimate of the training time
left from the first steps, then one line per epoch with the time left for the whole run, refined as it goes (and on a
terminal, one live line with the step and the time left). Long passes outside `fit` draw their own bar
(`evaluation.progress.PassProgress`).
"""

from __future__ import annotations

import sys
import time

import keras

ESTIMATE_AFTER_STEPS = 20  # steps timed before the first estimate, after the first call (tracing, compiling)
LIVE_EVERY_SECONDS = 0.5


def duration(seconds: float) -> str:
    """A time as a person reads it: seconds under two minutes, minutes under two hours, else hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunProgress(keras.callbacks.Callback):
    """The progress of a whole run of `total_epochs` epochs of `steps_per_epoch` steps, `epochs_done` of them already
    done (a resumed run): an estimate after the first steps, then a line per epoch with the time left."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, epochs_done: int = 0, stream=None, live=None):
        super().__init__()
        self.total_epochs, self.steps_per_epoch = total_epochs, steps_per_epoch
        self.epochs_done = epochs_done
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.epoch_seconds: list[float] = []
        self.phase = ""
        self._estimated = False
        self._last_live = 0.0

    def start_phase(self, name: str) -> None:
        self.phase = name

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._timed_from = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._timed_from is None:
            # Timed from the end of the first call: it traced and compiled, which the rest will not. With several
            # steps per call Keras reports every call's last step only, so steps are counted from `batch`.
            self._timed_from = (now, batch)
        elif not self._estimated and batch - self._timed_from[1] >= ESTIMATE_AFTER_STEPS:
            self._estimated = True
            started, first = self._timed_from
            seconds = (now - started) / (batch - first) * self.steps_left(batch + 1)
            self._say(f"about {duration(seconds)} of training to go, from the first {batch - first} steps timed "
                      "(validation and the test set come on top; refined after each epoch)")
        if self.live and now - self._last_live >= LIVE_EVERY_SECONDS:
            self._last_live = now
            loss = (logs or {}).get("loss")
            shown = f"  loss {loss:.4f}" if loss is not None else ""
            left = f"  {duration(self.seconds_left(now))} left" if self.epoch_seconds else ""
            self.stream.write(f"\r{self._where()}  step {batch + 1}/{self.steps_per_epoch}{shown}{left}\033[K")
            self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        self.epochs_done += 1
        values = ", ".join(f"{key} {value:.4f}" for key, value in sorted((logs or {}).items())
                           if key in ("loss", "accuracy", "val_loss", "val_accuracy"))
        left = self.seconds_left()
        after = f"; about {duration(left)} of training left" if left else ""
        self._say(f"epoch {self.epochs_done}/{self.total_epochs}{self._phase_name()}: "
                  f"{self.epoch_seconds[-1]:.1f} s, {values}{after}")

    def steps_left(self, steps_done_this_epoch: int) -> int:
        epochs_after_this = self.total_epochs - self.epochs_done - 1
        return epochs_after_this * self.steps_per_epoch + self.steps_per_epoch - steps_done_this_epoch

    def seconds_left(self, now: float | None = None) -> float:
        """The epochs to go at the mean of those timed (the current one's part already spent taken off)."""
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        left = (self.total_epochs - self.epochs_done) * mean
        if now is not None:  # within an epoch: what it has spent already is not left
            left = max(left - (now - self._epoch_start), 0.0)
        return left

    def _where(self) -> str:
        return f"epoch {self.epochs_done + 1}/{self.total_epochs}{self._phase_name()}"

    def _phase_name(self) -> str:
        return f" ({self.phase})" if self.phase else ""

    def _say(self, line: str) -> None:
        self.stream.write(("\r" if self.live else "") + line + ("\033[K" if self.live else "") + "\n")
        self.stream.flush()
