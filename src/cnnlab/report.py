"""The comparison report: finished runs in, `report.html` (one self-contained file) and `report.md` out.

It shows a table of the numbers that matter, learning curves of every model on one figure, the confusion matrices,
per-class accuracy side by side, a grid of test images with each model's prediction (mistakes marked), the hardware
and library versions, and a paragraph generated from the numbers that says which model won and by how much.
The HTML inlines its images as data URIs and has no scripts, external styles or fonts, so it opens offline.
"""

from __future__ import annotations

import base64
import html
import math
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab import figures, rundir
from cnnlab.config import RunConfig, config_from_dict
from cnnlab.display import markdown_text, short_text, terminal_text
from cnnlab.errors import CnnlabError, first_line
from cnnlab.evaluate import read_history, read_metrics
from cnnlab.models import kind_of

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
GRID_IMAGES = 24
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


def build_report(
    run_dirs: list[Path], out_dir: Path, test_set: tuple[np.ndarray, np.ndarray] | None = None
) -> Path:
    """Write report.html, report.md and their figures into `out_dir`; return the HTML path.

    `test_set` (uint8 images and labels, in the order the runs were scored) enables the prediction grid; without it,
    or if its labels are not the ones the runs were scored on, the grid is left out.
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
    class_names = tuple(runs[0].metrics["data"]["classes"])
    y_test = runs[0].labels
    if test_set is not None and not np.array_equal(test_set[1], y_test):
        print("warning: no prediction grid: the test images found are not the ones these runs were scored on",
              file=sys.stderr)
        test_set = None

    pictures: list[tuple[str, str, Path]] = []  # (heading, caption, file)
    curves = figures_dir / "learning_curves.png"
    figures.plot_learning_curves({label: run.history for label, run in zip(labels, runs)}, curves)
    pictures.append(("Learning curves", "Training (solid) and validation (dashed) per epoch.", curves))
    per_class = figures_dir / "per_class_accuracy.png"
    figures.plot_per_class_accuracy(
        {label: [run.metrics["per_class_accuracy"][name] for name in class_names] for label, run in zip(labels, runs)},
        class_names, per_class,
    )
    pictures.append(("Per-class accuracy", "Test accuracy for each class, models side by side.", per_class))
    for index, (label, run) in enumerate(zip(labels, runs), start=1):
        matrix = figures_dir / f"confusion_matrix_{index}.png"
        figures.plot_confusion_matrix(run.metrics["confusion_matrix"], class_names, matrix, f"{label}: test set")
        pictures.append((f"Confusion matrix: {label}", "Rows: true class; columns: predicted class.", matrix))
    if test_set is not None:
        grid = figures_dir / "predictions.png"
        test_images = test_set[0]
        chosen = np.random.default_rng(0).choice(len(test_images), size=min(GRID_IMAGES, len(test_images)), replace=False)
        tags = _short_tags(labels)
        figures.plot_prediction_grid(
            test_images[chosen], y_test[chosen],
            {tag: run.probabilities[chosen].argmax(axis=1) for tag, run in zip(tags, runs)}, class_names, grid,
        )
        legend = "; ".join(f"{tag} = {label}" for tag, label in zip(tags, labels))
        pictures.append(("Test images and predictions",
                         f"{len(chosen)} test images picked at random (seed 0); a red name marks a wrong prediction. "
                         f"{legend}.", grid))

    table = _table(runs, labels)
    verdict = verdict_paragraph(runs, labels)
    environment = _environment(runs)
    title = "cnnlab comparison: " + " vs ".join(labels)
    documents = {  # both rendered before either is written
        REPORT_HTML: _html(title, verdict, table, pictures, environment),
        REPORT_MD: _markdown(title, verdict, table, pictures, environment, out_dir),
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
    """Short names for the prediction grid ("CNN", "VGG16"), numbered where they would clash."""
    words = [label.split(" ")[0] for label in labels]
    return [f"{word}-{index}" if words.count(word) > 1 else word for index, word in enumerate(words, start=1)]


def _unique_labels(runs: list[FinishedRun]) -> list[str]:
    labels = [run.label for run in runs]
    return [f"{label} ({run.path.name})" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


# ---------------------------------------------------------------------------------------------------------------------
# Words and numbers


def mcnemar_p_value(first_right: np.ndarray, second_right: np.ndarray) -> float:
    """Two-sided p-value of McNemar's test (continuity-corrected): do two models scored on the same images differ?"""
    only_first = int(np.sum(first_right & ~second_right))
    only_second = int(np.sum(~first_right & second_right))
    if only_first + only_second == 0:
        return 1.0
    statistic = (abs(only_first - only_second) - 1) ** 2 / (only_first + only_second)
    return math.erfc(math.sqrt(max(statistic, 0.0) / 2))  # chi-squared with one degree of freedom


def verdict_paragraph(runs: list[FinishedRun], labels: list[str]) -> str:
    """One paragraph, from the numbers alone: who won, by how much, and whether that is more than chance."""
    ranked = sorted(zip(labels, runs), key=lambda pair: -pair[1].metrics["test_accuracy"])
    (best_label, best), others = ranked[0], ranked[1:]
    n = len(best.labels)
    sentences = []
    if not others:
        sentences.append(f"{best_label} reached {best.metrics['test_accuracy']:.2%} test accuracy on {n:,} test images.")
    for label, run in others:
        gap = best.metrics["test_accuracy"] - run.metrics["test_accuracy"]
        p_value = mcnemar_p_value(best.probabilities.argmax(1) == best.labels, run.probabilities.argmax(1) == run.labels)
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
        timed = [(label, run), (best_label, best)]
        if all(timed_run.metrics.get("train_seconds") is not None for _, timed_run in timed):
            (fast_label, fast), (slow_label, slow) = sorted(timed, key=lambda pair: pair[1].metrics["train_seconds"])
            ratio = slow.metrics["train_seconds"] / max(fast.metrics["train_seconds"], 1e-9)
            sentences.append(f"{fast_label} trained in {_duration(fast.metrics['train_seconds'])}, "
                             f"{ratio:.1f}x faster than {slow_label} ({_duration(slow.metrics['train_seconds'])}).")
    # Each kind's own warning about how a run of it started (VGG16 from random weights: no test of transfer learning).
    sentences += dict.fromkeys(caveat for run in runs if (caveat := kind_of(run.config).caveat(run.config)))
    return " ".join(sentences)


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:  # a run whose training summary was lost (re-scored after its metrics.json was damaged)
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _table(runs: list[FinishedRun], labels: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "test accuracy", "test loss", "parameters", "trainable", "epochs", "training time",
              "time per epoch", "weights", "preset"]
    rows = []
    for label, run in zip(labels, runs):
        metrics = run.metrics
        weights = kind_of(run.config).weights(run.config) or "none (random init)"
        per_epoch = "; ".join(
            f"{phase['name']} {phase['seconds_per_epoch']:.1f} s" for phase in metrics.get("phases", [])
            if phase.get("seconds_per_epoch") is not None
        )
        rows.append([
            label, f"{metrics['test_accuracy']:.2%}", f"{metrics['test_loss']:.3f}", _count(metrics.get("parameters")),
            _count(metrics.get("trainable_parameters")), _count(metrics.get("epochs")),
            _duration(metrics.get("train_seconds")),
            per_epoch or _seconds(metrics.get("seconds_per_epoch")), weights, run.config.preset,
        ])
    return header, rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


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


def _markdown(title, verdict, table, pictures, environment, out_dir: Path) -> str:
    """Every piece of text goes through `markdown_text`: a name cannot add a link, HTML or a table column."""
    header, rows = table
    lines = [f"# {markdown_text(title)}", "", markdown_text(verdict), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows]
    for heading, caption, path in pictures:
        lines += ["", f"## {markdown_text(heading)}", "", markdown_text(caption), "",
                  f"![{markdown_text(heading)}]({path.relative_to(out_dir).as_posix()})"]
    lines += ["", "## Environment", ""] + [f"- {markdown_text(line)}" for line in environment]
    return "\n".join(lines) + "\n"


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.5; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d5; padding: 0.35em 0.6em; text-align: right; }
th { background: #f2f2f5; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.verdict { font-size: 1.1em; background: #f6f8fa; border-left: 4px solid #3b7dd8; padding: 0.8em 1em; }
.environment { color: #555; font-size: 0.85em; }
"""


def _html(title, verdict, table, pictures, environment) -> str:
    header, rows = table
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{_html_text(title)}</title>",
        f"<style>{STYLE}</style></head><body>", f"<h1>{_html_text(title)}</h1>",
        f'<p class="verdict">{_html_text(verdict)}</p>',
        "<table><thead><tr>" + "".join(f"<th>{_html_text(cell)}</th>" for cell in header) + "</tr></thead><tbody>",
    ]
    parts += ["<tr>" + "".join(f"<td>{_html_text(cell)}</td>" for cell in row) + "</tr>" for row in rows]
    parts.append("</tbody></table>")
    for heading, caption, path in pictures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [f"<h2>{_html_text(heading)}</h2>", f"<p>{_html_text(caption)}</p>",
                  f'<img alt="{_html_text(heading)}" src="data:image/png;base64,{data}">']
    parts += ['<h2>Environment</h2><div class="environment">'] + [f"<p>{_html_text(line)}</p>" for line in environment]
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"


def _html_text(text: str) -> str:
    # Quotes too (html.escape's default), since some text goes into an attribute; invisible characters as escapes,
    # which also keeps out surrogates from undecodable folder names, which UTF-8 cannot write.
    return html.escape(terminal_text(text), quote=True)
