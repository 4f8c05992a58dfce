"""Whole jobs, start to finish, each recorded in run directories.

- `train_run` (`cnnlab train`): data -> splits -> model -> train -> evaluate -> figures, in one run directory. A
  search's trial (`cnnlab.tuning`) is one too, unscored: only the best trial's model meets the test set.
- `evaluate_run` (`cnnlab evaluate`): re-score a finished run (on its own data source or another copy), and on request
  under the common corruptions (`--corruptions`).
- `compare` (`cnnlab compare`): train several models (the CNN and a pretrained backbone by default) under one
  preset, then `report` on them all; `resume_compare` finishes an interrupted one from its plan.
- `report` (`cnnlab report`): the comparison report of any finished runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from cnnlab.backends import machine
from cnnlab.common.errors import CnnlabError, first_line, one_line
from cnnlab.common.files import read_json, write_json
from cnnlab.common.text import terminal_text
from cnnlab.config import RunConfig, config_from_dict, preset_measured
from cnnlab.data import Dataset, load_dataset, make_splits
from cnnlab.evaluation import figures
from cnnlab.runs import rundir
from cnnlab.runs import provenance
from cnnlab.evaluation.scoring import (TTA_VARIANTS, check_corruption_settings, corruption_sample,
                                       metrics_from_probabilities, predict_probabilities, score_corruptions)
from cnnlab.models import check_model_list, compared_kinds, kind_of  # the registry alone: no Keras until a model is built
from cnnlab.runs.metrics import TEST_SCORED
from cnnlab.runs.run import Run
from cnnlab.training.observer import RunObserver

COMPARE_PLAN = "compare.json"  # in a comparison's folder: the models it trains, in order, for --resume
LEGACY_COMPARED = ("cnn", "vgg16")  # what a comparison trained before it wrote its plan


def train_run(config: RunConfig, out: Path | None = None, *, score_test: bool = True,
              observers: Sequence[RunObserver] = ()) -> Path:
    """Train and evaluate one model; return its run directory. Data problems surface before anything is written.

    With several processes (many machines) every process trains, and only process 0 writes the run directory: the
    others write into scratch copies (`Placement.working_dir`) and return the path process 0 wrote.
    Without `score_test` the run finishes unscored (metrics.json says so, and `cnnlab evaluate` scores it later).
    `observers` are told of the run's start, each epoch and its end (`training.observer`).
    """
    data, splits, placement, model = _data_and_model(config)
    # The model is built before the run directory exists, so a bad weights file or setting leaves nothing behind.
    target = Path(out or rundir.default_run_dir(config.preset, config.model))
    with placement.working_dir(target) as where:
        run = Run.create(where)
        with run.locked():
            _train_into(run, config, placement, model, data, splits, score_test=score_test, observers=observers)
    return target


def resume_run(run_dir: Path, *, score_test: bool = True, observers: Sequence[RunObserver] = ()) -> Path:
    """Continue an interrupted run (killed, crashed or stopped with Ctrl-C) from its last saved state (`score_test`
    and `observers` as `train_run` takes them)."""
    config = Run.open(run_dir).config
    placement = _placement(config)
    # A process other than 0 resumes from a copy of the run directory: the same state, written nowhere shared.
    with placement.working_dir(run_dir, resume=True) as where:
        run = Run(where)
        with run.locked():
            # Locked before reading the status: a process still writing here could yet change it.
            if run.state() == "finished":
                raise CnnlabError(f"{run_dir} has already finished; nothing to resume")
            # Pretrained weights are not needed: they come back from the saved state, so no download happens.
            data, splits, placement, model = _data_and_model(config, architecture_only=True, trained_in=run,
                                                             placement=placement)
            _train_into(run, config, placement, model, data, splits, resume=True, score_test=score_test,
                        observers=observers)
    return Path(run_dir)


def _placement(config: RunConfig):
    """Where a run of `config` computes (imports Keras: call once the input has been checked)."""
    from cnnlab.backends import placement_for

    return placement_for(config)


def _data_and_model(config: RunConfig, architecture_only: bool = False, trained_in: Run | None = None,
                    placement=None):
    """Load and split the data (for a run `trained_in`: the data it was trained on, or an error),
    then find where the run computes and build the seeded model there; returns the data, its splits, the run's
    `Placement` and the model."""
    data = load_dataset(config.data, config.train.seed)
    if trained_in is not None:
        trained_in.check_data(data)
    splits = make_splits(data, config.data.val_size, config.train.seed, config.data.train_limit)
    import keras  # imported only once the input has been checked: it takes seconds

    from cnnlab.models import prepare_with_data
    from cnnlab.models.factory import build_model
    from cnnlab.models.memory import check_fits

    check_fits(config, len(data.class_names), splits.x_train.shape[1:])  # before building: that allocates
    placement = placement or _placement(config)  # once per run: every model of the run is made there
    print(placement.describe(), file=sys.stderr)
    keras.utils.set_random_seed(config.train.seed)
    built_from = kind_of(config).without_downloads(config) if architecture_only else config
    model = build_model(built_from, len(data.class_names), splits.x_train.shape[1:], placement)
    # Also when resuming: a phase with no whole saved state yet starts again from this fresh model.
    prepare_with_data(model, config, splits.x_train)
    return data, splits, placement, model


def _train_into(run: Run, config: RunConfig, placement, model, data: Dataset, splits, resume: bool = False,
                score_test: bool = True, observers: Sequence[RunObserver] = ()) -> None:
    config = run.write_config(config, data)
    run.record_data(data)
    run.set_status("running")
    print(f"run directory: {run.path}", file=sys.stderr)
    if config.train.tensorboard:  # TensorBoard's HParams dashboard: the run's settings against its final scores
        from cnnlab.tracking.tensorboard import HParamsSummary

        observers = (*observers, HParamsSummary())
    for observer in observers:
        observer.run_started(run.path, config, resume)
    state = "failed"
    try:
        _train_and_score(run, config, placement, model, data, splits, resume, score_test, observers)
        state = "finished"
    except Stopped:
        state = "stopped"
        raise
    finally:
        for observer in observers:
            _tell_the_end(observer, run, state)


def _tell_the_end(observer: RunObserver, run: Run, state: str) -> None:
    """An observer's work at a run's end (a tracker's last records) is a warning if it fails: the run and its
    directory are done, and stay as they are."""
    try:
        observer.run_ended(run.path, state)
    except Exception as exc:
        print(f"warning: {type(observer).__name__} did not record {run.path}: {terminal_text(one_line(exc))}",
              file=sys.stderr)


def _train_and_score(run: Run, config: RunConfig, placement, model, data: Dataset, splits, resume: bool,
                     score_test: bool, observers: Sequence[RunObserver]) -> None:
    from cnnlab.training.trainer import train_model

    stop_requested = _StopRequest()
    try:
        with _interrupts_finish_the_epoch() as stop_requested:
            result = train_model(config, model, splits, run, resume=resume, stop_requested=stop_requested,
                                 placement=placement, observers=observers, scores_test=score_test)
        kind = kind_of(config)
        metrics = {
            "model": config.model,
            "label": kind.label(config),
            "preset": config.preset,
            "weights": kind.weights(config),
            **placement.record(),  # backend, devices, precision and why
            **result.summary(),
            "train_images": int(len(splits.y_train)),
            "val_images": int(len(splits.y_val)),
            "best_val_accuracy": run.best_val_accuracy(),
            "data": provenance.metrics_record(data),
        }
        if score_test:
            _evaluate_and_record(run, result.model, data, metrics, config)
        else:
            _record_unscored(run, metrics)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None) or stop_requested.signum or signal.SIGINT
        name = signal.Signals(signum).name
        run.set_status("stopped", f"stopped by {name}; continue with: cnnlab train --resume {run.path}")
        print(f"stopped by {name}; the last saved state is kept. Continue with: cnnlab train --resume {run.path}",
              file=sys.stderr)
        raise Stopped(signum) from None
    except Exception as exc:
        run.record_failure(exc)
        raise
    run.set_status("finished")


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal (Ctrl-C's SIGINT, or the SIGTERM with which Slurm, Kubernetes and systemd stop a
    job), its state saved; the command exits with 128 + the signal's number, as a shell reports such a stop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The signals that stop a run cleanly: the first asks training to stop once the current epoch's state is saved,
# which a scheduler's grace period must cover (or `train.save_every_steps` keep short); a second stops at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopRequest:
    """What the trainer asks after each step (`stop_requested()`): whether a stop signal came, and which."""

    signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def _interrupts_finish_the_epoch():
    """The first SIGINT or SIGTERM asks training to stop once the current epoch's state is saved; a second stops at
    once."""
    request = _StopRequest()

    def on_signal(signum, frame):
        if request():
            raise Stopped(signum)
        request.signum = signum
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        print(f"\n{signal.Signals(signum).name}: stopping at the end of this epoch, once its state is saved "
              f"({again} again to stop now)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield request
        return
    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def evaluate_run(run_dir: Path, data_source: str | None = None, sha256: str | None = None, corruptions: bool = False,
                 corruption_images: int | None = None, corruption_seed: int = 0) -> dict[str, object]:
    """Re-score a finished run on the test set and redraw its figures; returns the updated metrics.

    With `corruptions`, also score it under the 15 common corruptions at 5 severities, on `corruption_images` test
    images (stratified, drawn with `corruption_seed`; default all), into metrics.json's "corruptions". Without,
    earlier corruption scores are kept while the test images are the same, and dropped (with a note) otherwise.
    """
    check_corruption_settings(corruption_images, corruption_seed)
    run = Run.open_finished(run_dir)
    config = run.config
    data = run.load_data(data_source, sha256)
    model = run.load_model(data.class_names)
    with run.locked():
        metrics = _training_summary(run)
        record = provenance.metrics_record(data)
        if corruptions:
            metrics["corruptions"] = _score_corruptions(model, data, config, corruption_images, corruption_seed)
        elif "corruptions" in metrics and not _same_test_images(metrics.get("data"), record):
            del metrics["corruptions"]
            print("note: the scores under corruptions were for other test images and are dropped (score them again "
                  "with --corruptions)", file=sys.stderr)
        metrics["data"] = record
        return _evaluate_and_record(run, model, data, metrics, config)


def _score_corruptions(model, data: Dataset, config: RunConfig, count: int | None, seed: int) -> dict:
    if count is not None and count > len(data.y_test):
        print(f"note: --corruption-images {count} is more than the {len(data.y_test):,} test images; using them all",
              file=sys.stderr)
    index = corruption_sample(data.y_test, count, seed)
    return score_corruptions(model, data.x_test[index], data.y_test[index], seed, config.train.evaluation_batch_size,
                             config.train.test_time_augmentation, log=lambda line: print(line, file=sys.stderr))


def _same_test_images(scored_on, record: dict) -> bool:
    """Whether metrics.json's earlier data record (`scored_on`) names the test images of `record`: the same kind,
    classes, size and content hash (a source with no hash, an extracted CIFAR-10 folder: the same path too)."""
    if not isinstance(scored_on, dict):
        return False
    same = all(scored_on.get(key) == record[key] for key in ("kind", "content_hash", "image_size"))
    same = same and scored_on.get("classes") == list(record["classes"])
    return same and (record["content_hash"] is not None or scored_on.get("path") == record["path"])


def _training_summary(run: Run) -> dict:
    """What evaluate keeps of a run's metrics.json: everything, unless it is missing or damaged. Re-scoring is how
    such a file is mended, so damage is a warning here (the scores are written anew, the training summary is lost)."""
    if not run.has_metrics():
        return {}
    try:
        return run.metrics(require_test=False)  # a search's trial is scored here
    except CnnlabError as exc:
        print(f"warning: {one_line(exc)}; writing it anew from the test set", file=sys.stderr)
        return {}


def _record_unscored(run: Run, metrics: dict) -> None:
    """metrics.json of a run kept from the test set (a search's trial): its training (best validation accuracy
    included) and learning curves; `cnnlab evaluate` scores it."""
    metrics.update({TEST_SCORED: False, "versions": machine.library_versions(), "hardware": machine.hardware()})
    run.write_metrics(metrics)
    _draw(run, lambda: _draw_learning_curves(run))


def _evaluate_and_record(run: Run, model, data: Dataset, metrics: dict, config: RunConfig) -> dict:
    from cnnlab.models.flops import forward_flops  # Keras: imported once a model is at hand

    metrics.pop(TEST_SCORED, None)  # a search's trial, scored now
    start = time.perf_counter()
    probabilities = predict_probabilities(model, data.x_test, batch_size=config.train.evaluation_batch_size,
                                          shown_as="test set",
                                          augmentation=config.train.test_time_augmentation)
    metrics["test_seconds"] = round(time.perf_counter() - start, 2)
    metrics["test_time_augmentation"] = config.train.test_time_augmentation
    forward = forward_flops(model)
    metrics["flops"] = {**metrics.get("flops", {}), "forward_per_image": forward,
                        "test": forward * len(data.x_test) * TTA_VARIANTS[config.train.test_time_augmentation]}
    run.write_predictions(probabilities, data.y_test)
    metrics.update(metrics_from_probabilities(probabilities, data.y_test, data.class_names))
    metrics["versions"] = machine.library_versions()
    metrics["hardware"] = machine.hardware()
    run.write_metrics(metrics)  # before the figures: a plotting problem cannot lose them

    def draw():
        _draw_learning_curves(run)
        figures.plot_confusion_matrix(metrics["confusion_matrix"], data.class_names, run.confusion_matrix_path,
                                      f"{run.name}: test set")

    _draw(run, draw)
    return metrics


def _draw_learning_curves(run: Run) -> None:
    if run.history_path.is_file():
        figures.plot_learning_curves({run.name: run.history()}, run.learning_curves_path, run.name)


def _draw(run: Run, draw) -> None:
    """Draw a run's figures; any plotting error is a warning: the model and its numbers are kept, figures are
    extras."""
    try:
        run.figures_dir.mkdir(exist_ok=True)
        draw()
    except Exception as exc:
        print(f"warning: figures not drawn: {terminal_text(first_line(exc))} "
              f"(redraw them with: cnnlab evaluate {terminal_text(run.path)})", file=sys.stderr)


def resume_compare(out: Path, observers: Sequence[RunObserver] = ()) -> Path:
    """Finish an interrupted `compare`: finished runs are kept as they are, an interrupted one is resumed, a
    missing one is trained, then the report is written."""
    out = Path(out)
    config, models = _compare_plan(out)
    runs = [Run(out / name) for name in models]
    for name, run in zip(models, runs):
        if not run.has_status():
            if run.path.exists() and any(run.path.iterdir()):
                raise CnnlabError(f"{run.path} holds files but no run status; move it away and resume again")
            train_run(dataclasses.replace(config, model=name), run.path, observers=observers)
        elif run.state() != "finished":
            resume_run(run.path, observers=observers)
    return _report_from_chief(config, [run.path for run in runs], out, observers)


def _compare_plan(out: Path) -> tuple[RunConfig, list[str]]:
    """The configuration and the models of the comparison in `out`, as its plan file says; a comparison from before
    there was one trained the CNN and VGG16, with the CNN's configuration."""
    plan = out / COMPARE_PLAN
    if not plan.is_file():
        first = Run(out / LEGACY_COMPARED[0])
        if not first.has_config():
            raise CnnlabError(f"{out} is not an interrupted comparison (no {COMPARE_PLAN})")
        return first.config, list(LEGACY_COMPARED)
    recorded = read_json(plan)
    models = recorded.get("models") if isinstance(recorded, dict) else None
    if not isinstance(models, list) or not isinstance(recorded.get("config"), dict):
        raise CnnlabError(f"{plan} is not the plan of a comparison (its models and configuration)")
    check_model_list(models)
    return config_from_dict(recorded["config"]), models


def _report_from_chief(config: RunConfig, run_dirs: list[Path], out: Path,
                       observers: Sequence[RunObserver] = ()) -> Path:
    """The comparison's report, written by process 0 alone; the others have trained their part and are done."""
    if not _placement(config).is_chief:
        return out
    html_path = report(run_dirs, out)
    for observer in observers:
        observer.report_written(out, run_dirs)
    return html_path


def compare(config: RunConfig, models: list[str] | None = None, out: Path | None = None,
            observers: Sequence[RunObserver] = ()) -> Path:
    """Train each of `models` (default: `models.compared_kinds()`, the CNN and a pretrained backbone) under one
    preset into `out/<model>`, one after the other, then write the report on them all in `out`."""
    models = list(models or compared_kinds())
    check_model_list(models)
    if config.model not in models:
        # Such a preset's recipe (the fast net's SGD at lr 1.5, say) is tuned for its own net, not for the others.
        named = f"{', '.join(models[:-1])} and {models[-1]}"
        raise CnnlabError(f"compare trains {named} under one recipe, and this configuration (preset "
                          f"{config.preset!r}) is for model {config.model!r}; train each run on its own and compare "
                          "them with `cnnlab report RUN_DIR RUN_DIR`")
    out = Path(out) if out else rundir.default_run_dir(f"compare-{config.preset}", "-".join(models))
    chief = _placement(config).is_chief
    if chief and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnlabError(f"--out {out} already exists and is not empty; choose another folder (or --resume it)")
    configs = [dataclasses.replace(config, model=name) for name in models]
    for each in configs:  # missing or mismatched weights fail now, not after the first model has trained
        kind_of(each).check_weights(each)
    _say_the_plan(configs)
    if chief:  # what --resume will train, should this be interrupted, and how: all it needs, before any run starts
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / COMPARE_PLAN, {"models": models, "config": config.to_dict()})
    run_dirs = []
    for number, each in enumerate(configs, 1):
        print(f"model {number} of {len(configs)}: {kind_of(each).label(each)}", file=sys.stderr)
        run_dirs.append(train_run(each, out / each.model, observers=observers))
    return _report_from_chief(config, run_dirs, out, observers)


def _say_the_plan(configs: list[RunConfig]) -> None:
    """What compare will do, and what its preset measured before (each line names its machine: speed varies)."""
    labels = [kind_of(each).label(each) for each in configs]
    labels = f"{', '.join(labels[:-1])} and {labels[-1]}"
    print(f"compare under preset {configs[0].preset}: {labels}, one after the other, then the report",
          file=sys.stderr)
    for line in preset_measured().get(configs[0].preset, []):
        print(f"  measured before: {line}", file=sys.stderr)


def report(run_dirs: list[Path], out: Path | None = None, search=None) -> Path:
    """The comparison report of finished runs; the test images for its pictures come from the first run's
    data source, and those pictures are left out (with a warning) if that source is gone or changed. `search`: the
    summary of the search that found the run (`tuning.summary`), for its section."""
    from cnnlab.report.builder import REPORT_HTML, REPORT_MD, build_report

    first_run = Run.open_finished(run_dirs[0])
    names = "-".join(Path(run_dir).name for run_dir in run_dirs)[:60]
    out = Path(out) if out else rundir.default_run_dir("report", names, Path("reports"))
    if (out / REPORT_HTML).exists() or (out / REPORT_MD).exists():
        raise CnnlabError(f"{out} already holds a report; choose another --out folder")
    try:
        data = first_run.load_data()
        test_set = (data.x_test, data.y_test)
    except CnnlabError as exc:
        print(f"warning: no pictures of test images: cannot load them ({exc})", file=sys.stderr)
        test_set = None
    return build_report(run_dirs, out, test_set, search)
