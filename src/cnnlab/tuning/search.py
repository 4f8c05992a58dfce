"""`cnnlab search`: trials of a preset's settings, drawn from a search space, each a run directory scored on the
validation split; then the best trial's settings as a preset, its model scored once on the test set, and a report.

Optuna does the search (not KerasTuner, which searches the hyperparameters of a Keras model-building function: a
cnnlab search is over any preset setting, recipe and data augmentation included, and each trial is a whole cnnlab
run). Optuna's ask-and-tell interface drives those runs as they are; its median pruner ends a trial whose first
epochs trail the others'; its study lives in a SQLite file, so a killed search resumes where it stopped and more
processes can join one study (`cnnlab search --resume DIR` in another terminal or machine sharing the folder).

A search folder:
    search.json        the plan: the configuration searched from, the space, the number of trials, pruning
    study.db           Optuna's study (SQLite)
    trials/trial-NNN/  each trial's run directory, not scored on the test set (but for the best trial's)
    trials.csv         every trial: its state, validation accuracy, epochs, time and settings
    best.toml          the best trial's settings as a preset: `cnnlab train --preset DIR/best.toml`
    report.html, report.md, figures/   the best trial's report, with the search's own section
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

from cnnlab.common.errors import CnnlabError, install_hint, one_line
from cnnlab.common.files import atomic_path, read_json, write_json
from cnnlab.config import RunConfig, config_from_dict, to_toml, with_overrides
from cnnlab.runs import rundir
from cnnlab.runs.run import Run
from cnnlab.training.observer import RunObserver
from cnnlab.tuning.space import Dimension, read_space, space_from_dicts
from cnnlab.tuning.summary import search_summary, state_name

PLAN = "search.json"
STUDY_DB = "study.db"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_PRESET = "best.toml"
STUDY_NAME = "cnnlab"
WORKER = "worker"  # a trial's user attribute: the host and process that asked for it
FAILURE = "failure"  # a failed trial's user attribute: why
# Trials the pruner lets finish before it judges others, and epochs of each trial before it judges that trial.
PRUNER_STARTUP_TRIALS = 2
PRUNER_WARMUP_EPOCHS = 1


@dataclasses.dataclass(frozen=True)
class Plan:
    config: RunConfig
    space: list[Dimension]
    trials: int
    prune: bool


def make_plan(config: RunConfig, space_path: Path, trials: int, prune: bool = True) -> Plan:
    """The plan of a search of `config`'s settings over the space in `space_path`, every problem with either found
    here, before Keras is imported or anything is written."""
    if importlib.util.find_spec("optuna") is None:
        raise CnnlabError(f"search needs Optuna: {install_hint('search')}")
    if trials < 1:
        raise CnnlabError(f"--trials must be at least 1, got {trials}")
    if config.data.val_size == 0:
        raise CnnlabError(f"a search scores its trials on a validation split, and preset {config.preset!r} holds none "
                          "out (data.val_size = 0); add --val-size (5000 images, or 0.1 of them)")
    return Plan(config, read_space(space_path, config), trials, prune)


def search(plan: Plan, out: Path | None = None, observers: tuple[RunObserver, ...] = ()) -> Path:
    """Run the search `plan` into the folder `out` (new, or empty); returns its report."""
    config = plan.config
    out = Path(out) if out else rundir.default_run_dir(f"search-{config.preset}", config.model)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnlabError(f"--out {out} already exists and is not empty; choose another folder (or --resume it)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN, {"config": config.to_dict(), "space": [dimension.to_dict() for dimension in plan.space],
                            "trials": plan.trials, "prune": plan.prune})
    _say_the_plan(plan)
    return _run(out, plan, observers)


def resume_search(out: Path, observers: tuple[RunObserver, ...] = ()) -> Path:
    """Go on with the search in `out`: an interrupted trial continues from its saved state, then new trials run
    until the plan's number is reached; the report is written once the last one ends."""
    return _run(Path(out), read_plan(out), observers)


def read_plan(out: Path) -> Plan:
    path = Path(out) / PLAN
    if not path.is_file():
        raise CnnlabError(f"{out} is not a search folder (no {PLAN})")
    raw = read_json(path)
    try:
        return Plan(config_from_dict(raw["config"]), space_from_dicts(raw["space"]), int(raw["trials"]),
                    bool(raw["prune"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path} is damaged ({one_line(exc)})") from None


def _say_the_plan(plan: Plan) -> None:
    print(f"search: {plan.trials} trials of preset {plan.config.preset} ({plan.config.model}), scored on the "
          f"validation split, {'with' if plan.prune else 'without'} pruning, over:", file=sys.stderr)
    for dimension in plan.space:
        print(f"  {dimension.key}: {dimension}", file=sys.stderr)


def _run(out: Path, plan: Plan, observers: tuple[RunObserver, ...]) -> Path:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cnnlab says what each trial did, in its own words
    study = _study(out, plan)
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _worked_on_elsewhere(frozen, _trial_dir(out, frozen.number)):
            # Optuna has no public way from a stored trial to a live one but its id.
            _run_trial(out, plan, study, optuna.trial.Trial(study, frozen._trial_id), observers, resume=True)
    while len(study.get_trials(deepcopy=False)) < plan.trials:
        trial = study.ask()
        trial.set_user_attr(WORKER, _this_worker())
        _run_trial(out, plan, study, trial, observers)
    return _finish(out, plan, study, observers)


def _this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worked_on_elsewhere(frozen, run_dir: Path) -> bool:
    """Whether another live process is running this trial: one of this machine that asked for it and still runs,
    or any process that holds its run directory's lock."""
    host, _, pid = str(frozen.user_attrs.get(WORKER, "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
        return True
    return rundir.in_use(run_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but another user's
        return True
    return True


def _study(out: Path, plan: Plan):
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{(out / STUDY_DB).resolve()}", study_name=STUDY_NAME,
                                direction="maximize", load_if_exists=True, pruner=trial_pruner(plan.prune))
    # Seeded, and anew for each process that takes part (a resume, a second worker): one seed for all would draw
    # the settings of the trials before it again.
    study.sampler = optuna.samplers.TPESampler(seed=(plan.config.train.seed + len(study.trials)) % 2**32)
    return study


def trial_pruner(prune: bool):
    """Optuna's median pruner, as a search uses it (`PRUNER_*`), or one that never prunes."""
    import optuna

    if not prune:
        return optuna.pruners.NopPruner()
    # Optuna judges a step from n_warmup_steps on, and a trial's steps are its epochs, counted from 1.
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)


def _trial_dir(out: Path, number: int) -> Path:
    return out / TRIALS_DIR / f"trial-{number:03d}"


class PruneTrial(RunObserver):
    """Reports each epoch's validation accuracy to the trial; ends the run when Optuna's pruner says so."""

    def __init__(self, trial):
        self.trial = trial

    def epoch_ended(self, epoch: int, logs: dict[str, float]) -> bool:
        value = logs.get("val_accuracy")
        if value is None:
            return False
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            print(f"trial {self.trial.number}: pruned after epoch {epoch}: its validation accuracy {value:.2%} trails "
                  "the other trials' at that epoch", file=sys.stderr)
            return True
        return False


def _run_trial(out: Path, plan: Plan, study, trial, observers: tuple[RunObserver, ...], resume: bool = False):
    from optuna.trial import TrialState

    from cnnlab.experiment import resume_run, train_run

    settings = {dimension.key: dimension.suggest(trial) for dimension in plan.space}
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    print(f"trial {trial.number} of {plan.trials}{' (resumed)' * resume}: {shown}", file=sys.stderr)
    run_dir, pruner = _trial_dir(out, trial.number), PruneTrial(trial)
    try:
        if resume and Run(run_dir).has_status():  # its own config.json says what it trains
            if Run(run_dir).state() != "finished":
                resume_run(run_dir, score_test=False, observers=(pruner, *observers))
        else:
            if resume and run_dir.exists():  # killed before its run began (no status): nothing trained, start it anew
                shutil.rmtree(run_dir)
            train_run(with_overrides(plan.config, settings), run_dir, score_test=False,
                      observers=(pruner, *observers))
    except KeyboardInterrupt:
        print(f"the search stops; go on with: cnnlab search --resume {out}", file=sys.stderr)
        raise
    except Exception as exc:  # settings that do not combine, a diverged run, out of memory: the search goes on
        reason = one_line(exc) or type(exc).__name__
        print(f"trial {trial.number} failed: {reason}", file=sys.stderr)
        trial.set_user_attr(FAILURE, reason)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return
    if Run(run_dir).metrics(require_test=False).get("cut_short"):  # by the pruner, now or before a resume
        study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        return
    value = Run(run_dir).best_val_accuracy()
    study.tell(trial, value, skip_if_finished=True)
    print(f"trial {trial.number}: best validation accuracy {value:.2%}", file=sys.stderr)


def _finish(out: Path, plan: Plan, study, observers: tuple[RunObserver, ...]) -> Path:
    """Write trials.csv and best.toml, score the best trial on the test set (once), and write the report."""
    from cnnlab import experiment
    from cnnlab.report.builder import REPORT_HTML

    _write_trials_csv(out, plan, study)
    if not [trial for trial in study.trials if trial.state.name == "COMPLETE"]:
        raise CnnlabError(f"none of the {len(study.trials)} trials completed (why: {out / TRIALS_CSV}); nothing to "
                          "report")
    best = study.best_trial
    best_dir = _trial_dir(out, best.number)
    best_config = Run(best_dir).config
    described = dataclasses.replace(best_config, description=f"The best of {len(study.trials)} trials of search "
                                    f"{out.name} (trial {best.number}, validation accuracy {best.value:.2%}), "
                                    f"from preset {plan.config.preset}.")
    with atomic_path(out / BEST_PRESET) as temporary:
        temporary.write_text(to_toml(described), encoding="utf-8")
    if (out / REPORT_HTML).exists():
        return out / REPORT_HTML
    if "test_accuracy" not in Run(best_dir).metrics(require_test=False):
        print(f"scoring the best trial, {best.number}, on the test set: the only trial that meets it",
              file=sys.stderr)
        experiment.evaluate_run(best_dir)
    html_path = experiment.report([best_dir], out, search=search_summary(out, plan, study))
    for observer in observers:
        observer.report_written(out, [best_dir])
    return html_path


def _write_trials_csv(out: Path, plan: Plan, study) -> None:
    keys = [dimension.key for dimension in plan.space]
    with atomic_path(out / TRIALS_CSV) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["trial", "state", "val_accuracy", "epochs", "seconds", *keys, "failure"])
            for trial in study.trials:
                seconds = trial.duration.total_seconds() if trial.duration else ""
                epochs = max(trial.intermediate_values, default="")
                writer.writerow([trial.number, state_name(trial), "" if trial.value is None else trial.value,
                                 epochs, seconds, *(trial.params.get(key, "") for key in keys),
                                 trial.user_attrs.get(FAILURE, "")])
