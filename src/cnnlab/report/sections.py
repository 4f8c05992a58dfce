"""The report's sections, in order: `SECTIONS`, the one list that both documents are drawn from.

A section is a key, a level-2 heading (none where its pictures carry their own headings, or for the verdict under the
report's title) and a function from the runs compared (`Compared`) to the section's blocks (`blocks`): paragraphs,
tables, pictures, lists, folded details. A section with no blocks is left out. Adding a section is one entry here and
one function that returns its blocks; the templates draw whatever blocks they get.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.report import pictures, tables
from cnnlab.report.blocks import BulletList, Code, Details, Notes, Paragraph, PerFormat, Picture, Table
from cnnlab.report.verdict import verdict_paragraph


@dataclass(frozen=True)
class Compared:
    """What the sections are built from: the runs (`builder.FinishedRun`s, checked comparable), the full label each
    goes by (unique), the folder the figures go into, and the test images the runs were scored on (in that order;
    None leaves out the pictures of test images)."""

    runs: list
    labels: list[str]
    figures_dir: Path
    test_images: np.ndarray | None = None
    search: object | None = None  # a search's `tuning.summary.SearchSummary`, when the report is a search's

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.runs[0].metrics["data"]["classes"])

    @property
    def names(self) -> list[str]:
        """Each run's short name, for headings, figures and the tables after the results table (which gives the full
        label beside it): its label's first word ("CNN", "VGG16"), numbered where two would clash; the full labels
        if the numbered names still clash."""
        words = [(label.split() or [label])[0] for label in self.labels]
        names = [f"{word}-{index}" if words.count(word) > 1 else word for index, word in enumerate(words, start=1)]
        return names if len(set(names)) == len(names) else self.labels

    @property
    def corruption_scores(self) -> list[tuple[str, dict]]:
        """(short name, corruption scores) of each run scored under the common corruptions (`evaluate
        --corruptions`)."""
        return [(name, run.metrics["corruptions"]) for name, run in zip(self.names, self.runs)
                if "corruptions" in run.metrics]


@dataclass(frozen=True)
class Section:
    key: str
    title: str | None
    build: Callable[[Compared], list]


def title(compared: Compared) -> str:
    return "cnnlab comparison: " + " vs ".join(compared.labels)


def build_sections(compared: Compared) -> list[tuple[str | None, list]]:
    """(heading, blocks) of each section that has something to show, in order; figures are written as they are."""
    return [(section.title, blocks) for section in SECTIONS if (blocks := section.build(compared))]


def _verdict(compared: Compared) -> list:
    return [Paragraph(verdict_paragraph(compared.runs, compared.labels), "verdict")]


def _results(compared: Compared) -> list:
    return [tables.results_table(compared.runs, compared.labels, compared.names),
            Paragraph("The interval is the 95% Wilson score interval of the test accuracy over the test images. "
                      "Inference: test images scored per second during the run's evaluation.")]


def _search(compared: Compared) -> list:
    """A search's trials, its best settings against the preset's, and Optuna's pictures of the study."""
    search = compared.search
    if search is None:
        return []
    counts = ", ".join(f"{count} {state}" for state, count in sorted(search.counts.items()))
    text = (f"Search {search.folder} tried {sum(search.counts.values())} settings of preset {search.preset} "
            f"({counts}) in {search.minutes:.1f} minutes of training, each scored on the same "
            f"{search.validation_images:,} validation images held out of the training set. The best, trial "
            f"{search.best_trial}, reached {search.best_value:.2%} validation accuracy; its model alone was scored on "
            "the test set, once: the results above. Its settings are the preset best.toml beside this report.")
    return [Paragraph(text),
            Table(["setting", f"preset {search.preset}", f"trial {search.best_trial} (best)"],
                  [list(row) for row in search.settings]),
            Details("Every trial", [Table(search.trial_header, search.trial_rows, "trials",
                                          highlighted=(search.best_trial,))], "search-trials"),
            *(Picture(heading, caption, path) for heading, caption, path in search.figures)]


def _groups(compared: Compared) -> list:
    table = tables.groups_table(compared.runs)
    return [Paragraph("Runs whose settings are the same but for the seed."), table] if table else []


def _pairwise(compared: Compared) -> list:
    if len(compared.runs) < 3:  # two runs: the verdict states their test already
        return []
    return [Paragraph("McNemar's test on the same test images for each pair; the p-values are adjusted for the "
                      "number of pairs with Holm's step-down correction."),
            tables.pairwise_table(compared.runs, compared.names)]


def _robustness(compared: Compared) -> list:
    scored = compared.corruption_scores
    if not scored:
        return []
    sentence = tables.robustness_sentence(scored)
    return [*([Paragraph(sentence, "robustness")] if sentence else []), tables.robustness_table(scored),
            Paragraph(("Accuracy under CIFAR-10-C's 15 corruptions (noise, blur, weather, digital), 5 severities "
                       "each, from ", Code("cnnlab evaluate RUN --corruptions"),
                       '; "kept" is the mean corrupted accuracy over the clean accuracy.'))]


def _per_class_numbers(compared: Compared) -> list:
    """Each run's per-class tables, folded under its short name."""
    return [Details((name, PerFormat(html=": precision, recall and F1 per class; top confusions; confusion matrix",
                                     markdown="")),
                    _run_numbers(run), "per-class", heading=True)
            for name, run in zip(compared.names, compared.runs)]


def _run_numbers(run) -> list:
    confusions = tables.top_confusions(run)
    mistakes = [Paragraph("Most frequent mistakes:"), BulletList(confusions)] if confusions else []
    return [tables.class_table(run), *mistakes, tables.confusion_table(run)]


def _settings(compared: Compared) -> list:
    summary = (PerFormat(html="Every setting of every run; highlighted where the runs differ",
                         markdown="Every setting of every run; in bold where the runs differ."),)
    return [Details(summary, [tables.settings_table(compared.runs, compared.names)], "settings", open=True)]


def _environment(compared: Compared) -> list:
    return [Notes(tables.environment_lines(compared.runs), "environment")]


SECTIONS = [
    Section("verdict", None, _verdict),
    Section("results", "Results", _results),
    Section("search", "Search", _search),
    Section("groups", "Runs of one setup, grouped", _groups),
    Section("pairwise", "Every pair of runs", _pairwise),
    Section("robustness", "Robustness: the common corruptions", _robustness),
    Section("learning-curves", None, pictures.learning_curves),
    Section("per-class-accuracy", None, pictures.per_class_accuracy),
    Section("corruption-accuracy", None, pictures.corruption_accuracy),
    Section("confusion-matrices", None, pictures.confusion_matrices),
    Section("disagreements", None, pictures.disagreements),
    Section("confident-mistakes", None, pictures.confident_mistakes),
    Section("per-class-numbers", "Per-class numbers", _per_class_numbers),
    Section("settings", "Settings", _settings),
    Section("environment", "Environment", _environment),
]
