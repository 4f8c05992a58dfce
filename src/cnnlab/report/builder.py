"""The comparison report: finished runs in, `report.html` (one self-contained file) and `report.md` out.

What it holds, in order: a paragraph generated from the numbers that says which model won, by how much and whether
that is beyond chance; the results table (each accuracy with its 95% Wilson interval, top-5 accuracy, inference speed,
model size); runs of one setup that differ only in their seed, grouped (mean ± sd); with more than two runs, every
pair tested (McNemar, Holm-corrected); learning curves with phase boundaries, the learning-rate schedule and the kept
epoch marked; per-class accuracy; the images where the models disagree and each model's most confident mistakes;
per-class precision, recall and F1, the top confusions and the confusion matrices as tables; every setting of every
run (the differing ones highlighted) with the data's hash, dates and the command that reproduces it; the hardware.

Both files are rendered from Jinja2 templates (`templates/`), the HTML one with autoescaping; every value passes
through `display.terminal_text` (HTML) or `display.markdown_text` (Markdown) on its way in, so a class or folder name
cannot add markup. The HTML inlines its images as data URIs and has no scripts, external styles or fonts: it opens
offline.
"""

from __future__ import annotations

import base64
import json
import math
import shlex
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import jinja2
from markupsafe import Markup

from cnnlab.evaluation import figures, stats
from cnnlab.runs import rundir
from cnnlab.config import RunConfig, config_from_dict, load_config
from cnnlab.common.text import markdown_text, short_text, terminal_text
from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.evaluation.scoring import read_history, read_metrics
from cnnlab.models import kind_of

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
GRID_IMAGES = 24  # images where the models disagree
MISTAKE_IMAGES = 12  # most confident mistakes, per model
TOP_CONFUSIONS = 5
# test_predictions.npz is read only after its zip directory and .npy headers match what metrics.json says was scored:
# a damaged or tampered file cannot make the report allocate more than this (CIFAR-10's hold 200 kB).
MAX_PREDICTIONS_BYTES = 256 * 2**20
NPZ_OVERHEAD_BYTES = 64 * 2**10  # zip headers and .npy headers beside the arrays themselves


@dataclass(frozen=True)
class FinishedRun:
    path: Path
    config: RunConfig
    metrics: dict
    history: dict[str, list[float]]
    probabilities: np.ndarray
    labels: np.ndarray

    @property
    def label(self) -> str:
        return self.metrics.get("label") or self.config.model


def load_finished_run(path: Path) -> FinishedRun:
    path = rundir.require_finished(path)
    predictions_file = path / rundir.TEST_PREDICTIONS
    metrics_file = path / rundir.METRICS
    if not metrics_file.is_file() or not predictions_file.is_file():
        raise CnnlabError(f"{path} has no test results (run `cnnlab evaluate {path}` first)")
    metrics = read_metrics(metrics_file)
    images, classes = _scored_shape(metrics, metrics_file)
    probabilities, labels = _read_predictions(predictions_file, images, classes)
    history_file = path / rundir.HISTORY
    return FinishedRun(
        path=path,
        config=config_from_dict(rundir.read_json(path / rundir.CONFIG)),
        metrics=metrics,
        history=read_history(history_file) if history_file.is_file() else {},
        probabilities=probabilities.astype(np.float32),
        labels=labels.astype(int),
    )


def _scored_shape(metrics: dict, metrics_file: Path) -> tuple[int, int]:
    """(test images, classes) that metrics.json says the run was scored on: the shape its predictions must have."""
    classes = len(metrics["data"]["classes"])
    images = sum(map(sum, metrics["confusion_matrix"]))
    if images < 1 or images * classes * 2 > MAX_PREDICTIONS_BYTES:
        raise CnnlabError(f"{metrics_file} is damaged (its confusion matrix counts {images:,} test images)")
    return images, classes


def _read_predictions(path: Path, images: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The (probabilities, labels) of test_predictions.npz. Its zip directory and .npy headers are checked against
    the shapes the run was scored on before any array is read; anything else is reported as damage, in one line."""
    expected = {"probabilities.npy": ((images, classes), np.dtype("<f2")), "labels.npy": ((images,), np.dtype("u1"))}
    try:
        if path.stat().st_size > _npz_size_limit(expected):  # checked before the zip directory is read
            raise ValueError("larger than its arrays can be")
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, expected)
            probabilities, labels = (_read_member(archive, name) for name in expected)
    except (OSError, EOFError, ValueError, TypeError, RecursionError, NotImplementedError, RuntimeError,
            zipfile.BadZipFile, zlib.error) as exc:
        # Damage shows up as any of these: truncated or corrupt zip data, an encrypted or unknown compression method,
        # a .npy header that does not parse (numpy's ValueError, or RecursionError for deeply nested text).
        raise CnnlabError(f"{path} is damaged ({short_text(first_line(exc), 200)})") from None
    if labels.size and labels.max() >= classes:
        raise CnnlabError(f"{path} is damaged (a label is not one of the {classes} classes)")
    return probabilities, labels


def _array_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _npz_size_limit(expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> int:
    return sum(_array_bytes(*layout) for layout in expected.values()) + NPZ_OVERHEAD_BYTES


def _check_members(archive: zipfile.ZipFile, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Raise ValueError unless the archive holds exactly the expected .npy members, with the expected headers."""
    names = archive.namelist()
    if sorted(names) != sorted(expected):
        raise ValueError(f"holds {', '.join(map(repr, names)) or 'nothing'}, expected {', '.join(expected)}")
    for name, (shape, dtype) in expected.items():
        info = archive.getinfo(name)
        if info.file_size > _array_bytes(shape, dtype) + NPZ_OVERHEAD_BYTES:  # bounds what the header read inflates
            raise ValueError(f"{name} is larger than its array can be")
        with archive.open(info) as member:
            header = _npy_header(member)
            size = member.tell() + _array_bytes(shape, dtype)
        if header != (shape, dtype):
            raise ValueError(f"{name} holds {header[1]} {header[0]}, expected {dtype} {shape}")
        if info.file_size != size:  # then reading the array inflates exactly what its header says
            raise ValueError(f"{name} is {info.file_size:,} bytes, expected {size:,}")


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:  # cnnlab writes version 1.0; 3.0 only adds unicode field names, which no array of ours has
        raise ValueError(f"unsupported .npy version {version}")
    return shape, dtype


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


@dataclass(frozen=True)
class Picture:
    heading: str
    caption: str
    path: Path


def build_report(
    run_dirs: list[Path], out_dir: Path, test_set: tuple[np.ndarray, np.ndarray] | None = None
) -> Path:
    """Write report.html, report.md and their figures into `out_dir`; return the HTML path.

    `test_set` (uint8 images and labels, in the order the runs were scored) enables the pictures of test images;
    without it, or if its labels are not the ones the runs were scored on, they are left out.
    """
    runs = [load_finished_run(Path(path)) for path in run_dirs]  # every run is checked before anything is written
    _check_comparable(runs)
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    try:
        figures_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create report folder {out_dir}: {exc.strerror or exc}") from None
    labels = _unique_labels(runs)
    if test_set is not None and not np.array_equal(test_set[1], runs[0].labels):
        print("warning: no pictures of test images: the test images found are not the ones these runs were scored "
              "on", file=sys.stderr)
        test_set = None
    pictures = _curve_and_class_figures(runs, labels, figures_dir)
    if test_set is not None:
        pictures += _test_image_figures(runs, labels, test_set[0], figures_dir)
    content = _content(runs, labels)
    documents = {  # both rendered before either is written
        REPORT_HTML: _render("report.html.j2", content, pictures, _data_uri),
        REPORT_MD: _render("report.md.j2", content, pictures, lambda path: path.relative_to(out_dir).as_posix()),
    }
    for name, text in documents.items():
        with rundir.atomic_path(out_dir / name) as temporary:
            temporary.write_text(text, encoding="utf-8")
    return out_dir / REPORT_HTML


def _check_comparable(runs: list[FinishedRun]) -> None:
    classes = {tuple(run.metrics.get("data", {}).get("classes", ())) for run in runs}
    if len(classes) != 1:
        raise CnnlabError("these runs were evaluated on different class lists; their results cannot be compared")
    if any(not np.array_equal(run.labels, runs[0].labels) for run in runs):
        raise CnnlabError("these runs were evaluated on different test sets; their results cannot be compared")


def _short_tags(labels: list[str]) -> list[str]:
    """Short names for pictures of test images ("CNN", "VGG16"), numbered where they would clash."""
    words = [label.split(" ")[0] for label in labels]
    return [f"{word}-{index}" if words.count(word) > 1 else word for index, word in enumerate(words, start=1)]


def _unique_labels(runs: list[FinishedRun]) -> list[str]:
    labels = [run.label for run in runs]
    return [f"{label} ({run.path.name})" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


def _class_names(runs: list[FinishedRun]) -> tuple[str, ...]:
    return tuple(runs[0].metrics["data"]["classes"])


# ---------------------------------------------------------------------------------------------------------------------
# Figures


def _curve_and_class_figures(runs: list[FinishedRun], labels: list[str], figures_dir: Path) -> list[Picture]:
    class_names = _class_names(runs)
    curves = figures_dir / "learning_curves.png"
    marks = {label: _curve_marks(run) for label, run in zip(labels, runs)}
    figures.plot_learning_curves({label: run.history for label, run in zip(labels, runs)}, curves, marks=marks)
    pictures = [Picture("Learning curves", _curves_caption(runs, marks.values()), curves)]
    per_class = figures_dir / "per_class_accuracy.png"
    figures.plot_per_class_accuracy(
        {label: [run.metrics["per_class_accuracy"][name] for name in class_names] for label, run in zip(labels, runs)},
        class_names, per_class,
    )
    pictures.append(Picture("Per-class accuracy", "Test accuracy for each class, models side by side.", per_class))
    robust = [(label, run.metrics["corruptions"]) for label, run in zip(labels, runs) if "corruptions" in run.metrics]
    if robust:
        path = figures_dir / "corruption_accuracy.png"
        figures.plot_corruption_accuracy({label: _severity_curve(record) for label, record in robust}, path)
        pictures.append(Picture("Accuracy under common corruptions",
                                "Each model's accuracy on the clean test images and under the 15 common corruptions "
                                "(CIFAR-10-C's, `cnnlab evaluate --corruptions`), averaged over the corruptions at "
                                "each severity.", path))
    for index, (label, run) in enumerate(zip(labels, runs), start=1):
        matrix = figures_dir / f"confusion_matrix_{index}.png"
        figures.plot_confusion_matrix(run.metrics["confusion_matrix"], class_names, matrix, f"{label}: test set")
        pictures.append(Picture(f"Confusion matrix: {label}", "Rows: true class; columns: predicted class.", matrix))
    return pictures


def _curve_marks(run: FinishedRun) -> figures.CurveMarks:
    """Where each phase after the first began (1-based epochs), and the epoch whose weights the run kept."""
    ends = np.cumsum([phase.get("epochs", 0) for phase in run.metrics.get("phases", [])])
    return figures.CurveMarks(tuple(int(end) + 1 for end in ends[:-1]), run.metrics.get("best_epoch"))


def _curves_caption(runs: list[FinishedRun], marks) -> str:
    with_validation = [figures.has_validation(run.history) for run in runs]
    if all(with_validation):
        caption = "Training (solid) and validation (dashed) per epoch."
    elif any(with_validation):
        caption = "Training (solid) per epoch; validation (dashed) for the runs that kept a validation set."
    else:
        caption = "Training per epoch (these runs kept no validation set)."
    if any(mark.phase_starts for mark in marks):
        caption += " A dotted vertical line marks where a new phase began (VGG16's fine-tuning)."
    if any(mark.best_epoch for mark in marks):
        caption += " A star marks the epoch whose weights the run kept (its best validation accuracy)."
    if any("learning_rate" in run.history for run in runs):
        caption += " The last panel draws the learning rate at each epoch's end."
    return caption


def _test_image_figures(runs: list[FinishedRun], labels: list[str], images: np.ndarray,
                        figures_dir: Path) -> list[Picture]:
    """The images where the models disagree, then each model's most confident mistakes."""
    class_names, y_test, tags = _class_names(runs), runs[0].labels, _short_tags(labels)
    predicted = [run.probabilities.argmax(axis=1) for run in runs]
    confidence = [run.probabilities.max(axis=1) for run in runs]
    legend = "; ".join(f"{tag} = {label}" for tag, label in zip(tags, labels))
    pictures = []
    if len(runs) > 1:
        disagreeing = np.flatnonzero(np.any(np.stack(predicted) != predicted[0], axis=0))
        if len(disagreeing):
            chosen = np.sort(np.random.default_rng(0).choice(disagreeing, min(GRID_IMAGES, len(disagreeing)), False))
            path = figures_dir / "disagreements.png"
            figures.plot_prediction_grid(images[chosen], y_test[chosen],
                                         {tag: guess[chosen] for tag, guess in zip(tags, predicted)}, class_names, path)
            pictures.append(Picture(
                "Where the models disagree",
                f"The models disagree on {len(disagreeing):,} of {len(y_test):,} test images; {len(chosen)} of them, "
                f"picked at random (seed 0). A red name marks a wrong prediction. {legend}.", path))
    for index, (tag, label, guess, sure) in enumerate(zip(tags, labels, predicted, confidence), start=1):
        wrong = np.flatnonzero(guess != y_test)
        chosen = wrong[np.argsort(-sure[wrong], kind="stable")[:MISTAKE_IMAGES]]
        if len(chosen):
            path = figures_dir / f"confident_mistakes_{index}.png"
            figures.plot_prediction_grid(images[chosen], y_test[chosen], {tag: guess[chosen]}, class_names, path,
                                         confidences={tag: sure[chosen]})
            pictures.append(Picture(f"Most confident mistakes: {label}",
                                    f"The {len(chosen)} wrong answers {label} gave with the highest probability "
                                    "(shown after the class).", path))
    return pictures


# ---------------------------------------------------------------------------------------------------------------------
# Words and numbers


def _right(run: FinishedRun) -> np.ndarray:
    return run.probabilities.argmax(axis=1) == run.labels


def verdict_paragraph(runs: list[FinishedRun], labels: list[str]) -> str:
    """One paragraph, from the numbers alone: who won, by how much, and whether that is more than chance. Runs of one
    setup (seeds) are compared as setups: their mean ± sd, and whether every pair of their runs differs."""
    setups = _setups(runs)
    sentences = _runs_verdict(runs, labels) if len(setups) == len(runs) else _setups_verdict(runs, setups)
    # Each kind's own warning about how a run of it started (VGG16 from random weights: no test of transfer learning).
    sentences += dict.fromkeys(caveat for run in runs if (caveat := kind_of(run.config).caveat(run.config)))
    return " ".join(sentences)


def _runs_verdict(runs: list[FinishedRun], labels: list[str]) -> list[str]:
    ranked = sorted(zip(labels, runs), key=lambda pair: -pair[1].metrics["test_accuracy"])
    (best_label, best), others = ranked[0], ranked[1:]
    n = len(best.labels)
    if not others:
        return [f"{best_label} reached {best.metrics['test_accuracy']:.2%} test accuracy on {n:,} test images."]
    sentences = []
    for label, run in others:
        gap = best.metrics["test_accuracy"] - run.metrics["test_accuracy"]
        p_value = stats.mcnemar_p_value(_right(best), _right(run))
        comparison = (
            f"{best_label} reached {best.metrics['test_accuracy']:.2%} test accuracy against "
            f"{run.metrics['test_accuracy']:.2%} for {label}, {gap * 100:.1f} points higher"
        )
        if p_value < 0.05:
            comparison += f" (McNemar's test on the same {n:,} test images: {_p(p_value)})"
        else:
            comparison += (f", a difference McNemar's test on the same {n:,} test images cannot tell from chance "
                           f"({_p(p_value)}): call it a tie")
        sentences.append(comparison + ".")
        sentences += _speed_sentence([(label, run.metrics.get("train_seconds")),
                                      (best_label, best.metrics.get("train_seconds"))])
    return sentences


def _setups_verdict(runs: list[FinishedRun], setups: list[list[int]]) -> list[str]:
    """Setups ranked by mean test accuracy; the best against each other, with the Holm-corrected tests of every pair
    of their runs."""
    adjusted = _pairwise_p_values(runs)
    ranked = sorted(setups, key=lambda members: -_mean([runs[i].metrics["test_accuracy"] for i in members]))
    best, others = ranked[0], ranked[1:]
    name = runs[best[0]].label
    if not others:
        return [f"{name} reached {_setup_score(runs, best)} test accuracy on {len(runs[0].labels):,} test images."]
    sentences = []
    for other in others:
        other_name = runs[other[0]].label
        gap = _mean([runs[i].metrics["test_accuracy"] for i in best]) - _mean(
            [runs[i].metrics["test_accuracy"] for i in other])
        different = [adjusted[min(i, j), max(i, j)][1] < 0.05 for i in best for j in other]
        sentence = (f"{name} reached {_setup_score(runs, best)} test accuracy against {_setup_score(runs, other)} "
                    f"for {other_name}, {gap * 100:.1f} points higher; ")
        if all(different):
            sentence += "every pair of their runs differs beyond chance"
        elif not any(different):
            sentence += "no pair of their runs differs beyond chance: call it a tie"
        else:
            sentence += f"{sum(different)} of the {len(different)} pairs of their runs differ beyond chance"
        sentences.append(sentence + " (McNemar's test, Holm-corrected over every pair of runs).")
        sentences += _speed_sentence([(other_name, _mean_seconds(runs, other)), (name, _mean_seconds(runs, best))])
    return sentences


def _speed_sentence(timed: list[tuple[str, float | None]]) -> list[str]:
    if any(seconds is None for _, seconds in timed):
        return []
    (fast_label, fast), (slow_label, slow) = sorted(timed, key=lambda pair: pair[1])
    return [f"{fast_label} trained in {_duration(fast)}, {slow / max(fast, 1e-9):.1f}x faster than {slow_label} "
            f"({_duration(slow)})."]


def _setups(runs: list[FinishedRun]) -> list[list[int]]:
    """Indices of the runs of each setup (the same label, and every setting but the seed the same), in run order."""
    setups: dict[tuple[str, str], list[int]] = {}
    for index, run in enumerate(runs):
        settings = run.config.to_dict()
        del settings["train"]["seed"]
        setups.setdefault((run.label, json.dumps(settings, sort_keys=True)), []).append(index)
    return list(setups.values())


def _mean(values: list[float]) -> float:
    return stats.mean_and_sd(values)[0]


def _mean_seconds(runs: list[FinishedRun], members: list[int]) -> float | None:
    seconds = [runs[i].metrics.get("train_seconds") for i in members]
    return None if None in seconds else _mean(seconds)


def _setup_score(runs: list[FinishedRun], members: list[int]) -> str:
    accuracies = [runs[i].metrics["test_accuracy"] for i in members]
    if len(accuracies) == 1:
        return f"{accuracies[0]:.2%}"
    mean, sd = stats.mean_and_sd(accuracies)
    return f"{mean:.2%} ± {sd * 100:.2f} points (mean ± sd of {len(accuracies)} seeds)"


def _pairwise_p_values(runs: list[FinishedRun]) -> dict[tuple[int, int], tuple[float, float]]:
    """McNemar's p-value of every pair of runs (i < j), and the same Holm-adjusted over all the pairs."""
    pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    p_values = [stats.mcnemar_p_value(_right(runs[i]), _right(runs[j])) for i, j in pairs]
    return dict(zip(pairs, zip(p_values, stats.holm_adjusted(p_values))))


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:  # a run whose training summary was lost (re-scored after its metrics.json was damaged)
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    highlighted: tuple[int, ...] = ()  # rows to draw the eye to (settings that differ between runs)


def _content(runs: list[FinishedRun], labels: list[str]) -> dict:
    """Everything the templates show but the pictures, as text."""
    return {
        "title": "cnnlab comparison: " + " vs ".join(labels),
        "verdict": verdict_paragraph(runs, labels),
        "results": _results_table(runs, labels),
        "groups": _groups_table(runs),
        "pairwise": _pairwise_table(runs, labels) if len(runs) > 2 else None,
        "robustness": _robustness(runs, labels),
        "details": [_run_details(run, label) for run, label in zip(runs, labels)],
        "settings": _settings_table(runs, labels),
        "environment": _environment(runs),
    }


def _results_table(runs: list[FinishedRun], labels: list[str]) -> Table:
    top_five = len(_class_names(runs)) > 5  # with five classes or fewer, top-5 accuracy is 100% by definition
    header = ["model", "test accuracy", "95% interval (Wilson)"] + (["top-5 accuracy"] if top_five else []) + [
        "test loss", "parameters", "trainable", "epochs", "training time", "time per epoch", "inference",
        "model size", "weights", "preset"]
    rows = []
    for label, run in zip(labels, runs):
        metrics, images = run.metrics, len(run.labels)
        low, high = stats.wilson_interval(round(metrics["test_accuracy"] * images), images)
        rows.append([label, f"{metrics['test_accuracy']:.2%}", f"{low:.2%} to {high:.2%}"]
                    + ([f"{stats.top_k_accuracy(run.probabilities, run.labels, 5):.2%}"] if top_five else [])
                    + [f"{metrics['test_loss']:.3f}", _count(metrics.get("parameters")),
                       _count(metrics.get("trainable_parameters")), _count(metrics.get("epochs")),
                       _duration(metrics.get("train_seconds")), _per_epoch(metrics), _inference_speed(metrics, images),
                       _file_size(run.path / rundir.MODEL),
                       kind_of(run.config).weights(run.config) or "none (random init)", run.config.preset])
    return Table(header, rows)


def _per_epoch(metrics: dict) -> str:
    phases = "; ".join(f"{phase['name']} {phase['seconds_per_epoch']:.1f} s" for phase in metrics.get("phases", [])
                       if phase.get("seconds_per_epoch") is not None)
    return phases or _seconds(metrics.get("seconds_per_epoch"))


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


def _groups_table(runs: list[FinishedRun]) -> Table | None:
    groups = [members for members in _setups(runs) if len(members) > 1]
    if not groups:
        return None
    rows = [[runs[members[0]].label, str(len(members)), _setup_score(runs, members).split(" (")[0],
             "; ".join(f"seed {runs[i].config.train.seed}: {runs[i].metrics['test_accuracy']:.2%}" for i in members)]
            for members in groups]
    return Table(["setup", "runs", "test accuracy, mean ± sd", "each run"], rows)


def _pairwise_table(runs: list[FinishedRun], labels: list[str]) -> Table:
    rows = []
    for (i, j), (p_value, adjusted) in _pairwise_p_values(runs).items():
        gap = runs[i].metrics["test_accuracy"] - runs[j].metrics["test_accuracy"]
        rows.append([labels[i], labels[j], f"{gap * 100:+.1f}", _p(p_value), _p(adjusted),
                     "yes" if adjusted < 0.05 else "no (a tie)"])
    return Table(["first", "second", "difference (points)", "McNemar p", "Holm-adjusted p",
                  "different at 5%?"], rows)


def _severity_curve(record: dict) -> list[float]:
    by_severity = np.mean(list(record["accuracy"].values()), axis=0)
    return [record["clean_accuracy"], *map(float, by_severity)]


def _robustness(runs: list[FinishedRun], labels: list[str]) -> tuple[Table, str] | None:
    """The corruption scores of the runs that have them, and a sentence on which model held up better (only for runs
    scored on identical images: the same fingerprint of every clean and corrupted image)."""
    scored = [(label, run.metrics["corruptions"]) for label, run in zip(labels, runs) if "corruptions" in run.metrics]
    if not scored:
        return None
    families = list(scored[0][1]["families"])
    table = Table(["model", "images", "seed", "clean accuracy", "mean corrupted accuracy", "kept",
                   *(f"{family}" for family in families)],
                  [[label, f"{record['images']:,}", str(record["seed"]), f"{record['clean_accuracy']:.2%}",
                    f"{record['mean_accuracy']:.2%}", f"{record['mean_accuracy'] / max(record['clean_accuracy'], 1e-9):.0%}",
                    *(f"{record['families'][family]:.2%}" for family in families)] for label, record in scored])
    return table, _robustness_sentence(scored)


def _robustness_sentence(scored: list[tuple[str, dict]]) -> str:
    if len(scored) < 2:
        return ""
    if len({record["images_sha256"] for _, record in scored}) > 1:
        return ("These runs were scored on different corrupted images (another seed or sample), so their corruption "
                "accuracies are not compared here; score them with the same --corruption-images and seed.")
    (best_label, best), (next_label, runner_up) = sorted(scored, key=lambda pair: -pair[1]["mean_accuracy"])[:2]
    return (f"Under the common corruptions {best_label} held up best: {best['mean_accuracy']:.2%} mean accuracy over "
            f"the 15 corruptions at 5 severities, {(best['mean_accuracy'] - runner_up['mean_accuracy']) * 100:.1f} "
            f"points more than {next_label} ({runner_up['mean_accuracy']:.2%}), on the same "
            f"{best['images']:,} test images; it kept {best['mean_accuracy'] / max(best['clean_accuracy'], 1e-9):.0%} "
            f"of its clean accuracy, {next_label} "
            f"{runner_up['mean_accuracy'] / max(runner_up['clean_accuracy'], 1e-9):.0%}.")


def _run_details(run: FinishedRun, label: str) -> dict:
    class_names = _class_names([run])
    confusion = np.asarray(run.metrics["confusion_matrix"])
    scores = stats.precision_recall_f1(confusion)
    classes = Table(["class", "precision", "recall", "F1", "test images"],
                    [[name, f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}", f"{count:,}"]
                     for name, (precision, recall, f1), count in zip(class_names, scores, confusion.sum(axis=1))])
    confusions = [f"{class_names[true]} taken for {class_names[guess]}: {count:,} image{'' if count == 1 else 's'}"
                  for true, guess, count in stats.top_confusions(confusion, TOP_CONFUSIONS)]
    matrix = Table(["true \\ predicted", *class_names],
                   [[name, *(f"{count:,}" for count in row)] for name, row in zip(class_names, confusion)])
    return {"label": label, "classes": classes, "confusions": confusions, "matrix": matrix}


def _settings_table(runs: list[FinishedRun], labels: list[str]) -> Table:
    """Every setting of every run, then where its data came from, when it finished and how to run it again."""
    flat = [_flatten(run.config.to_dict()) for run in runs]
    keys = list(dict.fromkeys(key for settings in flat for key in settings))
    rows = [[key, *(_setting_text(settings.get(key, "-")) for settings in flat)] for key in keys]
    records = [run.metrics.get("data", {}) for run in runs]
    rows += [
        ["data source", *(str(record.get("path") or record.get("kind") or "-") for record in records)],
        ["data hash (SHA-256)", *(f"{record.get('content_hash', '-')} ({record.get('hash_status', 'unknown')})"
                                  for record in records)],
        ["cnnlab version", *(str(run.metrics.get("versions", {}).get("cnnlab", "-")) for run in runs)],
        ["finished", *(str(rundir.read_status(run.path).get("time") or "-") for run in runs)],
        ["command", *(reproduce_command(run.config) for run in runs)],
    ]
    differing = tuple(index for index, row in enumerate(rows) if len(set(row[1:])) > 1)
    return Table(["setting", *labels], rows, differing)


def _flatten(settings: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _setting_text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def reproduce_command(config: RunConfig) -> str:
    """`cnnlab train` with the run's preset and a `--set` for each setting the run changed from it: the command that
    trains the same run again (from whatever the preset holds now)."""
    preset = config.preset
    try:
        baseline = _flatten(load_config(preset).to_dict())
    except CnnlabError:  # a preset that is gone, or was a TOML file elsewhere: every setting from the seed preset
        preset = "seed"
        baseline = _flatten(load_config(preset).to_dict())
    words = ["cnnlab", "train", "--preset", preset]
    for key, value in _flatten(config.to_dict()).items():
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


def _environment(runs: list[FinishedRun]) -> list[str]:
    lines = []
    for hardware, versions in sorted({(_flat(run.metrics.get("hardware", {})), _flat(run.metrics.get("versions", {})))
                                      for run in runs}):
        lines.append(f"Hardware: {hardware}. Libraries: {versions}.")
    lines.append(f"Report written {time.strftime('%Y-%m-%d %H:%M')} from: " + ", ".join(str(run.path) for run in runs))
    return lines


def _flat(mapping: dict) -> str:
    return ", ".join(f"{key} {value if value not in ([], None, '') else 'none'}" for key, value in mapping.items())


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render(template: str, content: dict, pictures: list[Picture], image_source) -> str:
    """Render one template. In HTML every value is shown as `terminal_text` and then escaped; in Markdown every
    value passes through `markdown_text`. Only `Markup` (image sources, built here) goes in as it is."""
    html = template.endswith(".html.j2")
    shown = terminal_text if html else markdown_text
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"), autoescape=html, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        finalize=lambda value: value if isinstance(value, Markup) else shown(value),
    )
    sourced = [{"heading": picture.heading, "caption": picture.caption, "source": Markup(image_source(picture.path))}
               for picture in pictures]
    return environment.get_template(template).render(**content, pictures=sourced, style=Markup(STYLE))


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.5; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d5; padding: 0.35em 0.6em; text-align: right; }
th { background: #f2f2f5; } td:first-child, th:first-child { text-align: left; }
tr.differs td { background: #fff4d6; font-weight: 600; }
td.command { font-family: ui-monospace, monospace; font-size: 0.85em; text-align: left; word-break: break-all; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
.verdict { font-size: 1.1em; background: #f6f8fa; border-left: 4px solid #3b7dd8; padding: 0.8em 1em; }
.environment { color: #555; font-size: 0.85em; }
"""
