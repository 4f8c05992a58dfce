"""What a search's report says of it (`SearchSummary`): its trials, the best settings against the preset's, and the
two pictures Optuna draws of a study (which settings mattered, and every trial across the settings)."""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cnnlab.common.errors import first_line
from cnnlab.common.settings import flat_settings
from cnnlab.config import toml_value
from cnnlab.runs.run import Run

FIGURES = "figures"
IMPORTANCE_PNG = "search_importance.png"
PARALLEL_PNG = "search_parallel_coordinates.png"


@dataclass(frozen=True)
class SearchSummary:
    folder: str
    preset: str
    validation_images: int
    counts: dict[str, int]  # trials by state: complete, pruned, failed
    best_trial: int
    best_value: float
    settings: list[tuple[str, str, str]]  # (setting, the preset's value, the best trial's)
    trial_header: list[str]
    trial_rows: list[list[str]]
    figures: list[tuple[str, str, Path]]  # (heading, caption, PNG)
    minutes: float  # of all trials together


def search_summary(out: Path, plan, study) -> SearchSummary:
    keys = [dimension.key for dimension in plan.space]
    best = study.best_trial
    best_run = Run(Path(out) / "trials" / f"trial-{best.number:03d}")
    start = flat_settings(plan.config.to_dict())
    settings = [(key, _shown(start[key]), _shown(best.params[key])) for key in keys]
    rows = [[str(trial.number), state_name(trial),
             "" if trial.value is None else f"{trial.value:.2%}",
             str(max(trial.intermediate_values, default="")),
             *(_shown(trial.params[key]) if key in trial.params else "" for key in keys)]
            for trial in study.trials]
    seconds = sum(trial.duration.total_seconds() for trial in study.trials if trial.duration)
    return SearchSummary(
        folder=Path(out).name, preset=plan.config.preset,
        validation_images=int(best_run.metrics().get("val_images", 0)),
        counts=dict(Counter(state_name(trial) for trial in study.trials)),
        best_trial=best.number, best_value=best.value, settings=settings,
        trial_header=["trial", "state", "validation accuracy", "epochs", *keys], trial_rows=rows,
        figures=_figures(Path(out) / FIGURES, study), minutes=seconds / 60,
    )


def state_name(trial) -> str:
    """A trial's state as cnnlab says it: complete, pruned, failed, running."""
    name = trial.state.name.lower()
    return "failed" if name == "fail" else name


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else toml_value(value) if not isinstance(value, str) else value


def _figures(folder: Path, study) -> list[tuple[str, str, Path]]:
    """Optuna's importance and parallel-coordinates plots of the study, where it can draw them (importance needs
    two completed trials that differ); a plot it cannot draw is left out with a warning."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    wanted = [
        ("Search: which settings mattered", "Each setting's share of the variation in validation accuracy across the "
         "completed trials (Optuna's PED-ANOVA importance).", IMPORTANCE_PNG,
         lambda: optuna_plots.plot_param_importances(
             study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())),
        ("Search: every trial", "Each completed trial as a line through its settings, coloured by its validation "
         "accuracy.", PARALLEL_PNG, lambda: optuna_plots.plot_parallel_coordinate(study)),
    ]
    for heading, caption, name, plot in wanted:
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental, a warning each time
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # matplotlib's, on an axis whose trials all agree
                axes = plot()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(9, 5)
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            drawn.append((heading, caption, folder / name))
        except Exception as exc:  # a figure is an extra: the trials table says everything
            print(f"warning: no figure {name}: {first_line(exc)}", file=sys.stderr)
    return drawn
