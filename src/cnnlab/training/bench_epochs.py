"""`cnnlab bench --whole-epochs N`: the time a user waits for, whole epochs of `cnnlab train --preset seed` against
the plain tutorial script doing the same job, each a fresh process, the two alternating.

`cnnlab bench` alone times training steps. A user also waits for what happens around them: validation, the best
checkpoint, cnnlab's resume state, Python's start and the data loading. Here both contenders run the whole job on
the same 45,000 training and 5,000 validation images (the seed preset's split), batch 32, `epochs` epochs, then
score the test set:

- the plain script (`plain_tutorial`): float32 arrays scaled to [0, 1], `model.fit` with `validation_data` and a
  `keras.callbacks.ModelCheckpoint(save_best_only=True)`, `model.evaluate` on the test set;
- `python -m cnnlab train --preset seed --epochs N` as a user types it (its resume state, two generations, every
  epoch; its best model; history.csv; model.keras and metrics.json at the end).

A whole epoch is timed from the end of the one before (for the first: from Keras's "Epoch 1/N" line) to Keras's
summary line for it. Keras prints that line from its ProgbarLogger, which it appends after every callback it is
given, so the line comes after the epoch's steps, its validation and every save. Every epoch counts, the first
(which traces the graphs) included; the ratio is images/s over all of them, so one slow epoch cannot hide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.common.errors import CnnlabError

PLAIN = "plain tutorial script (fit + validation_data + ModelCheckpoint)"
# What cnnlab's contender takes from `cnnlab bench --preset/--set`: how it computes, never what it trains.
SPEED_SETTINGS = ("train.precision", "train.steps_per_execution", "train.convolution_gradients")
CNNLAB = "cnnlab train --preset seed"
# Keras's lines (the plain script) and cnnlab's (training.progress): where the first epoch starts, where each ends.
_EPOCH_START = re.compile(r"^(Epoch \d+/\d+|phase '.*': \d+ epochs .*)$")
_EPOCH_SUMMARY = re.compile(r"^(\d+/\d+ - |epoch \d+/\d+.*: ).*val_accuracy")


@dataclass
class WholeRun:
    """One contender's process: each whole epoch's seconds, and the process's wall time from start to exit."""

    epoch_seconds: list[float] = field(default_factory=list)
    process_seconds: float = 0.0


@dataclass
class WholeContender:
    name: str
    runs: list[WholeRun] = field(default_factory=list)

    def images_per_second(self, train_images: int) -> float:
        epochs = [seconds for run in self.runs for seconds in run.epoch_seconds]
        return train_images * len(epochs) / sum(epochs)


def plain_tutorial(data_source: str, out: Path, epochs: int, seed: int, train_limit: int | None = None) -> None:
    """The tutorial's script as people write it, on cnnlab's split of the data (loading is not what is compared)."""
    import keras

    from cnnlab.config import load_config
    from cnnlab.data import load_dataset
    from cnnlab.data.batches import one_hot
    from cnnlab.data.splits import make_splits
    from cnnlab.training.bench import plain_keras_model

    config = load_config("seed", {"data.source": data_source, "train.seed": seed})
    splits = make_splits(load_dataset(config.data, seed), config.data.val_size, seed, train_limit)
    classes = len(splits.class_names)
    x_train, x_val, x_test = (x.astype("float32") / 255.0 for x in (splits.x_train, splits.x_val, splits.x_test))
    keras.utils.set_random_seed(seed)
    model = plain_keras_model(classes, x_train.shape[1:])
    model.fit(x_train, one_hot(splits.y_train, classes), batch_size=32, epochs=epochs, verbose=2,
              validation_data=(x_val, one_hot(splits.y_val, classes)),
              callbacks=[keras.callbacks.ModelCheckpoint(str(out / "best.keras"), monitor="val_accuracy",
                                                         save_best_only=True)])
    loss, accuracy = model.evaluate(x_test, one_hot(splits.y_test, classes), verbose=0)
    print(f"test accuracy {accuracy:.4f}, loss {loss:.4f}")


def time_process(command: list[str], name: str, epochs: int, log=print) -> WholeRun:
    """Run `command` (the contender `name`, training `epochs` epochs), timestamping each line it prints as it
    arrives; returns its whole epochs and wall time, or a one-line error unless it told exactly `epochs` apart."""
    start = time.perf_counter()
    run, epoch_began = WholeRun(), None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = []
    for line in process.stdout:
        now, line = time.perf_counter(), line.strip()
        lines.append(line)
        if _EPOCH_START.match(line) and epoch_began is None:
            epoch_began = now
        elif _EPOCH_SUMMARY.match(line) and epoch_began is not None:
            run.epoch_seconds.append(now - epoch_began)
            epoch_began = now  # the next epoch's set-up (a new pass over the data) is part of the next epoch
            log(f"  epoch {len(run.epoch_seconds)}: {run.epoch_seconds[-1]:.1f} s")
    if process.wait() != 0:
        raise CnnlabError(f"{name} failed (exit {process.returncode}): {lines[-1] if lines else 'no output'}")
    if len(run.epoch_seconds) != epochs:
        raise CnnlabError(f"{name}: found {len(run.epoch_seconds)} of its {epochs} epochs in what it printed "
                          "(Keras's 'Epoch k/N' and summary lines with val_accuracy)")
    run.process_seconds = time.perf_counter() - start
    return run


def run_whole_epochs(data_source: str, out: Path, epochs: int, rounds: int, speed: dict[str, object] | None = None,
                     train_limit: int | None = None, log=print) -> list[WholeContender]:
    """Alternate the plain script and `cnnlab train` `rounds` times each (the order swapping every round), each a
    fresh process writing under `out`; `speed` holds cnnlab's speed settings (`SPEED_SETTINGS`; the recipe stays the
    seed preset's, as the plain script's), and both train on the first `train_limit` training images if given."""
    if epochs < 2:
        raise ValueError("whole epochs are told apart by Keras's 'Epoch k/N' lines, which it prints from 2 epochs on")
    plain, cnnlab = WholeContender(PLAIN), WholeContender(CNNLAB)
    for round_index in range(rounds):
        for contender in ((plain, cnnlab) if round_index % 2 == 0 else (cnnlab, plain)):
            folder = Path(out) / f"{'plain' if contender is plain else 'cnnlab'}-{round_index}"
            folder.mkdir(parents=True)
            if contender is plain:
                command = [sys.executable, "-m", "cnnlab.training.bench_epochs",
                           json.dumps({"data": data_source, "out": str(folder), "epochs": epochs, "seed": 0,
                                       "train_limit": train_limit})]
            else:
                command = [sys.executable, "-m", "cnnlab", "train", "--preset", "seed", "--data", data_source,
                           "--epochs", str(epochs), "--seed", "0", "--out", str(folder / "run")]
                command += [item for key, value in (speed or {}).items() for item in ("--set", f"{key}={value}")]
                command += ["--train-limit", str(train_limit)] if train_limit else []
            log(f"round {round_index + 1}/{rounds}: {contender.name}"
                + (f" (cnnlab {' '.join(command[3:])})" if contender is cnnlab else ""))
            contender.runs.append(time_process(command, contender.name, epochs, log))
    return [plain, cnnlab]


def format_whole_epochs(contenders: list[WholeContender], train_images: int) -> str:
    baseline = contenders[0].images_per_second(train_images)
    lines = ["| | whole epochs, s (each epoch of each run) | img/s over all epochs | ratio | process start to exit, s |",
             "|---|---|---:|---:|---|"]
    for contender in contenders:
        speed = contender.images_per_second(train_images)
        epochs = " / ".join(", ".join(f"{seconds:.1f}" for seconds in run.epoch_seconds) for run in contender.runs)
        processes = ", ".join(f"{run.process_seconds:.1f}" for run in contender.runs)
        lines.append(f"| {contender.name} | {epochs} | {speed:,.0f} | {speed / baseline:.2f}x | {processes} |")
    return "\n".join(lines)


def _child_main(request: str) -> int:
    arguments = json.loads(request)
    plain_tutorial(arguments["data"], Path(arguments["out"]), arguments["epochs"], arguments["seed"],
                   arguments["train_limit"])
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
