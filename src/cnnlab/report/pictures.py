"""The report's figures: learning curves, per-class accuracy, accuracy under the common corruptions, the confusion
matrices, and pictures of test images (where the models disagree, each model's most confident mistakes).

Each function is a section of the report (`sections.SECTIONS`): it takes the report's `sections.Compared` (the runs,
their labels and short names, the figures folder, the test images if any), writes its PNG files into the figures
folder and returns them as `blocks.Picture`s, each with its heading and caption; none where it has nothing to show.
Headings, legends and captions name the runs by their short names, which the results table gives beside the labels.
"""

from __future__ import annotations

import numpy as np

from cnnlab.evaluation import figures
from cnnlab.report.blocks import Picture

GRID_IMAGES = 24  # images where the models disagree
MISTAKE_IMAGES = 12  # most confident mistakes, per model


def learning_curves(compared) -> list[Picture]:
    runs, names = compared.runs, compared.names
    path = compared.figures_dir / "learning_curves.png"
    marks = {name: _curve_marks(run) for name, run in zip(names, runs)}
    figures.plot_learning_curves({name: run.history for name, run in zip(names, runs)}, path, marks=marks)
    return [Picture("Learning curves", _curves_caption(runs, marks.values()), path)]


def _curve_marks(run) -> figures.CurveMarks:
    """Where each phase after the first began (1-based epochs), and the epoch whose weights the run kept."""
    ends = np.cumsum([phase.get("epochs", 0) for phase in run.metrics.get("phases", [])])
    return figures.CurveMarks(tuple(int(end) + 1 for end in ends[:-1]), run.metrics.get("best_epoch"))


def _curves_caption(runs: list, marks) -> str:
    with_validation = [figures.has_validation(run.history) for run in runs]
    if all(with_validation):
        caption = "Training (solid) and validation (dashed) per epoch."
    elif any(with_validation):
        caption = "Training (solid) per epoch; validation (dashed) for the runs that kept a validation set."
    else:
        caption = "Training per epoch (these runs kept no validation set)."
    if any(mark.phase_starts for mark in marks):
        caption += " A dotted vertical line marks where a new phase began (a pretrained backbone's fine-tuning)."
    if any(mark.best_epoch for mark in marks):
        caption += " A star marks the epoch whose weights the run kept (its best validation accuracy)."
    if any("learning_rate" in run.history for run in runs):
        caption += " The panel below them draws the learning rate at each epoch's end."
    return caption


def per_class_accuracy(compared) -> list[Picture]:
    names = compared.class_names
    path = compared.figures_dir / "per_class_accuracy.png"
    figures.plot_per_class_accuracy(
        {run_name: [run.metrics["per_class_accuracy"][name] for name in names]
         for run_name, run in zip(compared.names, compared.runs)},
        names, path,
    )
    return [Picture("Per-class accuracy", "Test accuracy for each class, models side by side.", path)]


def corruption_accuracy(compared) -> list[Picture]:
    """Accuracy by severity of the runs scored under the common corruptions; nothing if none was."""
    scored = compared.corruption_scores
    if not scored:
        return []
    path = compared.figures_dir / "corruption_accuracy.png"
    figures.plot_corruption_accuracy({name: _severity_curve(record) for name, record in scored}, path)
    return [Picture("Accuracy under common corruptions",
                    "Each model's accuracy on the clean test images and under the 15 common corruptions "
                    "(CIFAR-10-C's, `cnnlab evaluate --corruptions`), averaged over the corruptions at each severity.",
                    path)]


def _severity_curve(record: dict) -> list[float]:
    by_severity = np.mean(list(record["accuracy"].values()), axis=0)
    return [record["clean_accuracy"], *map(float, by_severity)]


def confusion_matrices(compared) -> list[Picture]:
    pictures = []
    for index, (name, run) in enumerate(zip(compared.names, compared.runs), start=1):
        path = compared.figures_dir / f"confusion_matrix_{index}.png"
        figures.plot_confusion_matrix(run.metrics["confusion_matrix"], compared.class_names, path, f"{name}: test set")
        pictures.append(Picture(f"Confusion matrix: {name}", "Rows: true class; columns: predicted class.", path))
    return pictures


def disagreements(compared) -> list[Picture]:
    """Test images where the models disagree, picked at random; nothing for one run, or without the test images."""
    runs, images = compared.runs, compared.test_images
    if images is None or len(runs) < 2:
        return []
    y_test = runs[0].labels
    predicted = [run.probabilities.argmax(axis=1) for run in runs]
    disagreeing = np.flatnonzero(np.any(np.stack(predicted) != predicted[0], axis=0))
    if not len(disagreeing):
        return []
    chosen = np.sort(np.random.default_rng(0).choice(disagreeing, min(GRID_IMAGES, len(disagreeing)), False))
    path = compared.figures_dir / "disagreements.png"
    figures.plot_prediction_grid(images[chosen], y_test[chosen],
                                 {name: guess[chosen] for name, guess in zip(compared.names, predicted)},
                                 compared.class_names, path)
    return [Picture("Where the models disagree",
                    f"The models disagree on {len(disagreeing):,} of {len(y_test):,} test images; {len(chosen)} of "
                    "them, picked at random (seed 0). A red name marks a wrong prediction.", path)]


def confident_mistakes(compared) -> list[Picture]:
    """Each model's wrong answers given with the highest probability; nothing without the test images."""
    images = compared.test_images
    if images is None:
        return []
    y_test, pictures = compared.runs[0].labels, []
    for index, (name, run) in enumerate(zip(compared.names, compared.runs), start=1):
        guess, sure = run.probabilities.argmax(axis=1), run.probabilities.max(axis=1)
        wrong = np.flatnonzero(guess != y_test)
        chosen = wrong[np.argsort(-sure[wrong], kind="stable")[:MISTAKE_IMAGES]]
        if not len(chosen):
            continue
        path = compared.figures_dir / f"confident_mistakes_{index}.png"
        figures.plot_prediction_grid(images[chosen], y_test[chosen], {name: guess[chosen]}, compared.class_names,
                                     path, confidences={name: sure[chosen]})
        pictures.append(Picture(f"Most confident mistakes: {name}",
                                f"The {len(chosen)} wrong answers {name} gave with the highest probability "
                                "(shown after the class).", path))
    return pictures

