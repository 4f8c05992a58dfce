"""`MlflowTracker`: each run mirrored to MLflow as it trains: its settings as params, each epoch's values as metrics
by step, its final scores, and its config, metrics, history, figures and report as artifacts.

The run directory stays the source of truth: nothing is written there for MLflow's sake, and `cnnlab track RUN_DIR`
mirrors a finished run later (a run is found again in MLflow by its `cnnlab.run_dir` tag, so a resumed or re-tracked
run goes on in the same MLflow run). Every call to MLflow is made from a thread of the tracker's own, so a slow or
unreachable tracking server never slows training; the first failure is one warning line, after which the tracker
only drops what it is given. Where: $MLFLOW_TRACKING_URI when set, else `sqlite:///mlflow.db` in the current folder
(what `mlflow ui` opens there); the experiment: $MLFLOW_EXPERIMENT_NAME, else "cnnlab".
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path

from cnnlab.common.errors import one_line
from cnnlab.common.settings import flat_settings
from cnnlab.common.text import terminal_text
from cnnlab.runs import rundir
from cnnlab.runs.run import Run
from cnnlab.tracking.params import run_params
from cnnlab.training.observer import RunObserver

DEFAULT_EXPERIMENT = "cnnlab"
RUN_DIR_TAG = "cnnlab.run_dir"
# How long the end of a run waits for the tracker to take its last records; after that they are given up, with a
# warning (the process does not wait for a tracker that is down).
FINISH_SECONDS = 30.0
# MLflow retries a failed request for minutes by default; a tracker that is down should be a warning at once. Both
# are read by MLflow per request; a value the user set is kept.
QUICK_FAILURE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
REPORT_FILES = ("report.html", "report.md")
PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch
STATES = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}


def default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


class MlflowTracker(RunObserver):
    """Mirrors the runs it is told of to MLflow (`RunObserver`), one MLflow run per run directory."""

    def __init__(self, uri: str | None = None, experiment: str | None = None):
        self.uri = uri or default_uri()
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        for name, value in QUICK_FAILURE.items():  # here, before the thread: os.environ is not safe to write there
            os.environ.setdefault(name, value)
        self._jobs: queue.Queue = queue.Queue()
        self._failed = False
        self._failing = threading.Lock()
        self._client = self._run_id = None
        self._run_ids: dict[Path, str] = {}  # the MLflow run of each run directory this tracker logged: asked once
        self._logged_epochs: set[int] = set()  # of the MLflow run found again: not logged twice
        threading.Thread(target=self._work, name="mlflow-tracker", daemon=True).start()
        # MLflow's import and store set-up take seconds of CPU: begun now, they overlap the command's own start-up
        # (Keras, the data) rather than the first epochs.
        self._jobs.put((self._connect, ()))

    # ---- what the run tells it (never blocks, but at the run's end) ------------------------------------------------

    def run_started(self, run_dir: Path, config, resumed: bool) -> None:
        self._jobs.put((self._start, (Path(run_dir).resolve(), config)))

    def epoch_ended(self, epoch: int, logs: dict[str, float]) -> bool:
        self._jobs.put((self._log_epoch, (dict(logs), epoch)))
        return False

    def run_ended(self, run_dir: Path, state: str) -> None:
        self._jobs.put((self._end, (Path(run_dir), state)))
        self.wait()

    def report_written(self, report_dir: Path, run_dirs: list[Path]) -> None:
        """A report on `run_dirs` (each tracked before) was written: it goes to each of their MLflow runs."""
        for run_dir in run_dirs:
            self._jobs.put((self._log_report, (Path(run_dir).resolve(), Path(report_dir))))
        self.wait()

    def replay(self, run_dir: Path) -> None:
        """Mirror a run that trained untracked (or while the tracker was down) from its directory."""
        run = Run.open(run_dir)
        self.run_started(run.path, run.config, resumed=True)
        history = run.history()
        for index, epoch in enumerate(history.get("epoch", [])):
            self.epoch_ended(int(epoch) + 1, {key: values[index] for key, values in history.items() if key != "epoch"})
        self.run_ended(run.path, rundir.read_status(run.path)["state"])

    def wait(self, seconds: float = FINISH_SECONDS) -> bool:
        """Wait until the tracker has taken everything given so far, for at most `seconds`; False if it has not."""
        done = threading.Event()
        self._jobs.put((None, done))
        if done.wait(seconds):
            return True
        self._fail(f"it took no records for {seconds:.0f} s; what is left is given up")
        return False

    @property
    def failed(self) -> bool:
        return self._failed

    # ---- the tracker's thread ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job, args = self._jobs.get()
            if job is None:  # a wait: everything before it is done
                args.set()
                continue
            if self._failed:  # after a failure, what it is given is dropped
                continue
            try:
                job(*args)
            except Exception as exc:  # any failure of MLflow's: one warning, then training goes on untracked
                self._fail(one_line(exc) or type(exc).__name__)

    def _fail(self, why: str) -> None:
        with self._failing:  # the tracker's thread and a timed-out wait may both get here: one warning
            if self._failed:
                return
            self._failed = True
        print(f"warning: MLflow tracking at {terminal_text(self.uri)} stopped: {terminal_text(why)} (the run "
              "directory has everything: `cnnlab track RUN_DIR` logs it later)", file=sys.stderr)

    def _start(self, run_dir: Path, config) -> None:
        from mlflow.entities import Param

        self._connect()
        self._run_id = self._run_ids[run_dir] = self._find_or_create_run(run_dir, config)
        params = [Param(key, str(value)[:6000]) for key, value in run_params(config).items()]
        existing = self._client.get_run(self._run_id).data.params
        params = [param for param in params if param.key not in existing]  # a resumed run's params are logged already
        for start in range(0, len(params), PARAMS_PER_CALL):
            self._client.log_batch(self._run_id, params=params[start:start + PARAMS_PER_CALL])

    def _connect(self) -> None:
        if self._client is not None:
            return
        from mlflow.tracking import MlflowClient

        # Their INFO lines (database migrations) are not the user's business; set after the import, which sets
        # MLflow's own levels.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self._client = MlflowClient(tracking_uri=self.uri)

    def _find_run(self, run_dir: Path) -> tuple[str | None, str | None]:
        """(experiment id, id of the MLflow run of `run_dir`); None for either not there."""
        experiment = self._client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None, None
        quoted = str(run_dir).replace("'", "\\'")
        found = self._client.search_runs([experiment.experiment_id], f"tags.`{RUN_DIR_TAG}` = '{quoted}'",
                                         max_results=1)
        return experiment.experiment_id, found[0].info.run_id if found else None

    def _find_or_create_run(self, run_dir: Path, config) -> str:
        experiment_id, run_id = self._find_run(run_dir)
        if run_id is not None:
            self._client.update_run(run_id, status="RUNNING")
            self._logged_epochs = {metric.step for metric in self._client.get_metric_history(run_id, "loss")}
            return run_id
        self._logged_epochs = set()
        experiment_id = experiment_id or self._client.create_experiment(self.experiment,
                                                                        artifact_location=_artifact_location(self.uri))
        tags = {RUN_DIR_TAG: str(run_dir), "cnnlab.model": config.model, "cnnlab.preset": config.preset}
        return self._client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id

    def _log_epoch(self, values: dict, epoch: int) -> None:
        if epoch not in self._logged_epochs:
            self._log_values(values, epoch)

    def _log_values(self, values: dict, step: int, run_id: str | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, step) for key, value in values.items()
                   if isinstance(value, (int, float)) and math.isfinite(value)]
        if metrics:
            self._client.log_batch(run_id or self._run_id, metrics=metrics)

    def _end(self, run_dir: Path, state: str) -> None:
        run = Run(run_dir)
        self._log_scores(self._run_id, run)
        for name in (rundir.CONFIG, rundir.METRICS, rundir.HISTORY):
            if (run.path / name).is_file():
                self._client.log_artifact(self._run_id, str(run.path / name))
        if run.figures_dir.is_dir() and any(run.figures_dir.iterdir()):
            self._client.log_artifacts(self._run_id, str(run.figures_dir), "figures")
        self._client.set_terminated(self._run_id, STATES.get(state, "FAILED"))

    def _log_scores(self, run_id: str, run: Run) -> None:
        """The run's final numbers from its metrics.json, as metrics at step 0."""
        if run.has_metrics():
            summary = run.metrics(require_test=False)
            scores = {key: value for key, value in flat_settings(summary).items() if _is_score(key, value)}
            self._log_values(scores, 0, run_id)

    def _log_report(self, run_dir: Path, report_dir: Path) -> None:
        """The report's files under the run's MLflow run, and its scores again: a search's best trial is scored on
        the test set after it trained."""
        self._connect()
        run_id = self._run_ids.get(run_dir) or self._find_run(run_dir)[1]
        if run_id is None:
            return
        self._log_scores(run_id, Run(run_dir))
        for name in REPORT_FILES:  # the report alone: its folder also holds the runs (a comparison's, a search's)
            if (report_dir / name).is_file():
                self._client.log_artifact(run_id, str(report_dir / name), "report")
        if (report_dir / "figures").is_dir():
            self._client.log_artifacts(run_id, str(report_dir / "figures"), "report/figures")


def _artifact_location(uri: str) -> str | None:
    """Beside a local SQLite store, where MLflow would otherwise put a new experiment's files: ./mlruns in whatever
    folder the command runs in. None (MLflow's choice) for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()


def _is_score(key: str, value) -> bool:
    """A final number worth a metric: accuracies, losses, times, FLOPs and counts (not the per-class or confusion
    tables, the versions or the hardware)."""
    return (type(value) in (int, float) and math.isfinite(value)
            and not key.startswith(("per_class_accuracy.", "hardware.", "versions.", "data.")))
