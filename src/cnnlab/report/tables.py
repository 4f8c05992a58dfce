"""The report's tables, as `blocks.Table`s of text: the results, the runs of one setup grouped, every pair of runs
tested, the scores under the common corruptions (and the sentence on which model held up best), each run's per-class
numbers, top confusions and confusion matrix, and every setting of every run with the command that trains it again
(`reproduce_command`); and the lines on the hardware and libraries the runs used.

Runs are the report's finished runs (`builder.FinishedRun`: path, label, config, metrics, probabilities, labels). The
results table names each run twice, by its short name (`sections.Compared.names`) and its full label; every other
table by its short name alone.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.common.errors import CnnlabError
from cnnlab.common.settings import flat_settings
from cnnlab.config import RunConfig, load_config
from cnnlab.evaluation import stats
from cnnlab.models import kind_of
from cnnlab.report.blocks import Table
from cnnlab.report.verdict import p_text, pairwise_p_values, setup_score, setups

TOP_CONFUSIONS = 5


def results_table(runs: list, labels: list[str], names: list[str]) -> Table:
    """Each run's short name beside its full label, its accuracy (with its 95% Wilson interval and, past five classes,
    top-5 accuracy), size and speed. Each time column is in one unit, the one its longest time reads best in."""
    top_five = len(_class_names(runs[0])) > 5  # with five classes or fewer, top-5 accuracy is 100% by definition
    units = (_time_unit([run.metrics.get("train_seconds") for run in runs]),
             _time_unit([seconds for run in runs for _, seconds in _epoch_times(run.metrics)]))
    header = ["name", "model", "test accuracy", "95% interval (Wilson)"] + (["top-5 accuracy"] if top_five else []) + [
        "test loss", "parameters", "trainable", "epochs", f"training time ({units[0].name})",
        f"time per epoch ({units[1].name})", "FLOPs: training; test", "inference", "model size", "weights", "preset"]
    return Table(header, [[name, *_results_row(run, label, top_five, units)]
                          for name, label, run in zip(names, labels, runs)], "results")


def _results_row(run, label: str, top_five: bool, units: tuple[_TimeUnit, _TimeUnit]) -> list[str]:
    metrics, images = run.metrics, len(run.labels)
    low, high = stats.wilson_interval(round(metrics["test_accuracy"] * images), images)
    per_epoch = "; ".join(f"{phase} {units[1].text(seconds)}".strip() for phase, seconds in _epoch_times(metrics))
    return ([label, f"{metrics['test_accuracy']:.2%}", f"{low:.2%} to {high:.2%}"]
            + ([f"{stats.top_k_accuracy(run.probabilities, run.labels, 5):.2%}"] if top_five else [])
            + [f"{metrics['test_loss']:.3f}", _count(metrics.get("parameters")),
               _count(metrics.get("trainable_parameters")), _count(metrics.get("epochs")),
               units[0].text(metrics.get("train_seconds")), per_epoch or "-", _flops_spent(metrics.get("flops", {})),
               _inference_speed(metrics, images),
               _file_size(run.model_path), _weights_file(run.config), run.config.preset])


def _flops_spent(flops: dict) -> str:
    """What training (its validation passes included) and scoring the test set cost (models/flops.py), each in the
    unit it reads best in; "-" for a run from before cnnlab counted them."""
    train = None if flops.get("train") is None else flops["train"] + (flops.get("validation") or 0)
    return "; ".join(_flop_text(value) for value in (train, flops.get("test")))


def _flop_text(value: float | None) -> str:
    if value is None:
        return "-"
    exponent = min(max(int(np.log10(max(value, 1))) // 3, 2), 5)  # M, G, T or P
    return f"{value / 1000**exponent:.3g} {'MGTP'[exponent - 2]}FLOP"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@dataclass(frozen=True)
class _TimeUnit:
    name: str
    seconds: float  # how many seconds make one

    def text(self, seconds: float | None) -> str:
        """`seconds` in this unit, without the unit (the column's header names it); "-" for None."""
        if seconds is None:  # a run whose training summary was lost (re-scored after its metrics.json was damaged)
            return "-"
        value = seconds / self.seconds
        return f"{value:.{0 if value >= 10 else 1 if value >= 1 else 2}f}"  # about two significant digits


# Longest first: a column is in the first unit whose threshold its longest time reaches (two of the unit or more).
_TIME_UNITS = (_TimeUnit("h", 3600), _TimeUnit("min", 60), _TimeUnit("s", 1))


def _time_unit(seconds: list[float | None]) -> _TimeUnit:
    longest = max((value for value in seconds if value is not None), default=0)
    return next((unit for unit in _TIME_UNITS if longest >= 2 * unit.seconds), _TIME_UNITS[-1])


def _epoch_times(metrics: dict) -> list[tuple[str, float]]:
    """(phase, seconds per epoch) of each timed phase; else ("", seconds per epoch) of the run; none if untimed."""
    phases = [(phase["name"], phase["seconds_per_epoch"]) for phase in metrics.get("phases", [])
              if phase.get("seconds_per_epoch") is not None]
    seconds = metrics.get("seconds_per_epoch")
    return phases or ([] if seconds is None else [("", seconds)])


def _weights_file(config: RunConfig) -> str:
    """Where the run's weights started: a file by its name alone (the settings table gives its path), or "imagenet"."""
    weights = kind_of(config).weights(config)
    return Path(weights).name if weights else "none (random init)"


def _inference_speed(metrics: dict, images: int) -> str:
    """Test images scored per second, as the run's evaluation timed them (test-time augmentation included)."""
    seconds = metrics.get("test_seconds")
    if not seconds:
        return "-"
    augmentation = metrics.get("test_time_augmentation", 0)
    return f"{images / seconds:,.0f} img/s" + (f" (TTA {augmentation})" if augmentation else "")


def _file_size(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "-"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def groups_table(runs: list) -> Table | None:
    """Each setup of several runs (seeds): its mean ± sd and each run's accuracy; None if every setup has one run."""
    groups = [members for members in setups(runs) if len(members) > 1]
    if not groups:
        return None
    rows = [[runs[members[0]].label, str(len(members)), setup_score(runs, members).split(" (")[0],
             "; ".join(f"seed {runs[i].config.train.seed}: {runs[i].metrics['test_accuracy']:.2%}" for i in members)]
            for members in groups]
    return Table(["setup", "runs", "test accuracy, mean ± sd", "each run"], rows, "groups")


def pairwise_table(runs: list, names: list[str]) -> Table:
    """Every pair of runs, by their short names: the gap, McNemar's p-value and the same Holm-adjusted over all the
    pairs."""
    rows = []
    for (i, j), (p_value, adjusted) in pairwise_p_values(runs).items():
        gap = runs[i].metrics["test_accuracy"] - runs[j].metrics["test_accuracy"]
        rows.append([names[i], names[j], f"{gap * 100:+.1f}", p_text(p_value), p_text(adjusted),
                     "yes" if adjusted < 0.05 else "no (a tie)"])
    return Table(["first", "second", "difference (points)", "McNemar p", "Holm-adjusted p",
                  "different at 5%?"], rows, "pairwise")


def robustness_table(scored: list[tuple[str, dict]]) -> Table:
    """The corruption scores (`name, metrics["corruptions"]` of each run that has them): clean, mean corrupted,
    how much of the clean accuracy was kept, and each family of corruptions."""
    families = list(scored[0][1]["families"])
    rows = [[name, f"{record['images']:,}", str(record["seed"]), f"{record['clean_accuracy']:.2%}",
             f"{record['mean_accuracy']:.2%}", f"{_kept(record):.0%}",
             *(f"{record['families'][family]:.2%}" for family in families)] for name, record in scored]
    return Table(["model", "images", "seed", "clean accuracy", "mean corrupted accuracy", "kept", *families], rows,
                 "robustness")


def robustness_sentence(scored: list[tuple[str, dict]]) -> str:
    """Which model held up best under the corruptions; compared only for runs scored on identical images (the same
    fingerprint of every clean and corrupted image). Empty for fewer than two runs."""
    if len(scored) < 2:
        return ""
    if len({record["images_sha256"] for _, record in scored}) > 1:
        return ("These runs were scored on different corrupted images (another seed or sample), so their corruption "
                "accuracies are not compared here; score them with the same --corruption-images and seed.")
    (best_name, best), (next_name, runner_up) = sorted(scored, key=lambda pair: -pair[1]["mean_accuracy"])[:2]
    return (f"Under the common corruptions {best_name} held up best: {best['mean_accuracy']:.2%} mean accuracy over "
            f"the 15 corruptions at 5 severities, {(best['mean_accuracy'] - runner_up['mean_accuracy']) * 100:.1f} "
            f"points more than {next_name} ({runner_up['mean_accuracy']:.2%}), on the same "
            f"{best['images']:,} test images; it kept {_kept(best):.0%} of its clean accuracy, {next_name} "
            f"{_kept(runner_up):.0%}.")


def _kept(record: dict) -> float:
    return record["mean_accuracy"] / max(record["clean_accuracy"], 1e-9)


def class_table(run) -> Table:
    """Precision, recall and F1 of each class, with its number of test images."""
    confusion = np.asarray(run.metrics["confusion_matrix"])
    scores = stats.precision_recall_f1(confusion)
    return Table(["class", "precision", "recall", "F1", "test images"],
                 [[name, f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}", f"{count:,}"]
                  for name, (precision, recall, f1), count in zip(_class_names(run), scores, confusion.sum(axis=1))],
                 "classes")


def top_confusions(run) -> list[str]:
    """The run's most frequent mistakes, most frequent first: "cat taken for dog: 12 images"."""
    names, confusion = _class_names(run), np.asarray(run.metrics["confusion_matrix"])
    return [f"{names[true]} taken for {names[guess]}: {count:,} image{'' if count == 1 else 's'}"
            for true, guess, count in stats.top_confusions(confusion, TOP_CONFUSIONS)]


def confusion_table(run) -> Table:
    names = _class_names(run)
    return Table(["true \\ predicted", *names],
                 [[name, *(f"{count:,}" for count in row)] for name, row in zip(names, run.metrics["confusion_matrix"])],
                 "confusion")


def _class_names(run) -> tuple[str, ...]:
    return tuple(run.metrics["data"]["classes"])


def settings_table(runs: list, names: list[str]) -> Table:
    """Every setting of every run (a column each, headed by its short name), then where its data came from, when it
    finished and how to run it again; the rows where the runs differ highlighted."""
    flat = [flat_settings(run.config.to_dict()) for run in runs]
    keys = list(dict.fromkeys(key for settings in flat for key in settings))
    rows = [[key, *(_setting_text(settings.get(key, "-")) for settings in flat)] for key in keys]
    records = [run.metrics.get("data", {}) for run in runs]
    rows += [
        ["data source", *(str(record.get("path") or record.get("kind") or "-") for record in records)],
        ["data hash (SHA-256)", *(f"{record.get('content_hash', '-')} ({record.get('hash_status', 'unknown')})"
                                  for record in records)],
        ["cnnlab version", *(str(run.metrics.get("versions", {}).get("cnnlab", "-")) for run in runs)],
        ["finished", *(run.finished or "-" for run in runs)],
        ["command", *(reproduce_command(run.config) for run in runs)],
    ]
    differing = tuple(index for index, row in enumerate(rows) if len(set(row[1:])) > 1)
    return Table(["setting", *names], rows, "settings", highlighted=differing, code_rows=(len(rows) - 1,))




def _setting_text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def reproduce_command(config: RunConfig) -> str:
    """`cnnlab train` with the run's preset and a `--set` for each setting the run changed from it: the command that
    trains the same run again (from whatever the preset holds now)."""
    preset = config.preset
    try:
        baseline = flat_settings(load_config(preset).to_dict())
    except CnnlabError:  # a preset that is gone, or was a TOML file elsewhere: every setting from the seed preset
        preset = "seed"
        baseline = flat_settings(load_config(preset).to_dict())
    words = ["cnnlab", "train", "--preset", preset]
    for key, value in flat_settings(config.to_dict()).items():
        if key != "preset" and value != baseline.get(key) and value is not None:
            words += ["--set", f"{key}={_toml(value)}"]
    return shlex.join(words)


def _toml(value) -> str:
    """One TOML value, as `--set KEY=VALUE` reads it (JSON's strings, numbers and arrays are TOML's too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def environment_lines(runs: list) -> list[str]:
    """The hardware and library versions the runs used (each combination once), and when and from what the report
    was written."""
    lines = []
    for hardware, versions in sorted({(_flat(run.metrics.get("hardware", {})), _flat(run.metrics.get("versions", {})))
                                      for run in runs}):
        lines.append(f"Hardware: {hardware}. Libraries: {versions}.")
    lines.append(f"Report written {time.strftime('%Y-%m-%d %H:%M')} from: " + ", ".join(str(run.path) for run in runs))
    return lines


def _flat(mapping: dict) -> str:
    return ", ".join(f"{key} {value if value not in ([], None, '') else 'none'}" for key, value in mapping.items())
