"""`build_report`: finished runs in, `report.html` (one self-contained file) and `report.md` out, with their figures.

It loads every run (`load_finished_run`, which checks each file) and checks that the runs were scored on the same
test images before anything is written, builds the sections (`sections`) and renders both documents (`render`)
before writing either. What the report holds is the package's docstring (`cnnlab.report`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.common.errors import CnnlabError
from cnnlab.common.files import atomic_path
from cnnlab.config import RunConfig
from cnnlab.report.render import html_document, markdown_document
from cnnlab.report.sections import Compared, build_sections, title
from cnnlab.runs.run import Run

REPORT_HTML = "report.html"
REPORT_MD = "report.md"


@dataclass(frozen=True)
class FinishedRun:
    path: Path
    config: RunConfig
    metrics: dict
    history: dict[str, list[float]]
    probabilities: np.ndarray
    labels: np.ndarray
    finished: str | None = None  # when, as its status records it

    @property
    def model_path(self) -> Path:
        return Run(self.path).model_path

    @property
    def label(self) -> str:
        return self.metrics.get("label") or self.config.model


def load_finished_run(path: Path) -> FinishedRun:
    """A finished run with its test results, every file checked, as the report reads it."""
    run = Run.open_finished(path)
    metrics, probabilities, labels = run.scores()
    return FinishedRun(path=run.path, config=run.config, metrics=metrics, history=run.history(),
                       probabilities=probabilities, labels=labels, finished=run.finished_at())


def build_report(
    run_dirs: list[Path], out_dir: Path, test_set: tuple[np.ndarray, np.ndarray] | None = None, search=None
) -> Path:
    """Write report.html, report.md and their figures into `out_dir`; return the HTML path.

    `test_set` (uint8 images and labels, in the order the runs were scored) enables the pictures of test images;
    without it, or if its labels are not the ones the runs were scored on, they are left out. `search` (a
    `tuning.summary.SearchSummary`) adds the section of the search that found the run.
    """
    runs = [load_finished_run(Path(path)) for path in run_dirs]  # every run is checked before anything is written
    _check_comparable(runs)
    out_dir = Path(out_dir)
    compared = Compared(runs, _unique_labels(runs), _figures_folder(out_dir), _test_images(runs, test_set), search)
    built = build_sections(compared)  # writes the figures
    documents = {  # both rendered before either is written
        REPORT_HTML: html_document(title(compared), built),
        REPORT_MD: markdown_document(title(compared), built, out_dir),
    }
    for name, text in documents.items():
        with atomic_path(out_dir / name) as temporary:
            temporary.write_text(text, encoding="utf-8")
    return out_dir / REPORT_HTML


def _figures_folder(out_dir: Path) -> Path:
    folder = out_dir / "figures"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create report folder {out_dir}: {exc.strerror or exc}") from None
    return folder


def _check_comparable(runs: list[FinishedRun]) -> None:
    classes = {tuple(run.metrics.get("data", {}).get("classes", ())) for run in runs}
    if len(classes) != 1:
        raise CnnlabError("these runs were evaluated on different class lists; their results cannot be compared")
    if any(not np.array_equal(run.labels, runs[0].labels) for run in runs):
        raise CnnlabError("these runs were evaluated on different test sets; their results cannot be compared")


def _unique_labels(runs: list[FinishedRun]) -> list[str]:
    labels = [run.label for run in runs]
    return [f"{label} ({run.path.name})" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


def _test_images(runs: list[FinishedRun], test_set: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray | None:
    """The images of `test_set` if its labels are the ones the runs were scored on, else None (with a warning)."""
    if test_set is None:
        return None
    if not np.array_equal(test_set[1], runs[0].labels):
        print("warning: no pictures of test images: the test images found are not the ones these runs were scored "
              "on", file=sys.stderr)
        return None
    return test_set[0]
