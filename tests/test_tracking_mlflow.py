"""`--track mlflow` and `cnnlab track`, each in a fresh process: MLflow holds what the run directory holds (settings,
each epoch, the scores, the files), a tracker that is down is one warning and never a failed run, and MLflow's own UI
shows the runs in a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cnnlab.runs import rundir
from conftest import (FLOAT32, TINY_DATA, TINY_KINDS, TINY_MODEL, free_port, launch_chromium, run_cnnlab,
                      run_metrics)
from test_tuning_search import history_column


def tracking(db: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}


def mlflow_run(db: Path, run_dir: Path):
    """(client, the one MLflow run of `run_dir`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("cnnlab")
    runs = client.search_runs([experiment.experiment_id], f"tags.`cnnlab.run_dir` = '{Path(run_dir).resolve()}'")
    assert len(runs) == 1
    return client, runs[0]


def assert_mlflow_holds_the_run(db: Path, run_dir: Path) -> None:
    """Its settings, each epoch's values by step, its final scores and its metrics.json are the run directory's."""
    client, run = mlflow_run(db, run_dir)
    config, metrics = json.loads((run_dir / rundir.CONFIG).read_text()), run_metrics(run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["model"] == config["model"]
    assert float(run.data.params["train.learning_rate"]) == config["train"]["learning_rate"]
    logged = sorted(client.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda metric: metric.step)
    assert [metric.step for metric in logged] == [epoch + 1 for epoch in range(len(logged))]  # each epoch once
    assert [metric.value for metric in logged] == pytest.approx(history_column(run_dir, "val_accuracy"))
    for name in ("test_accuracy", "test_loss"):
        assert run.data.metrics[name] == pytest.approx(metrics[name])
    copied = Path(client.download_artifacts(run.info.run_id, rundir.METRICS, str(run_dir.parent / "downloaded")))
    assert json.loads(copied.read_text()) == metrics
    figures = [artifact.path for artifact in client.list_artifacts(run.info.run_id, "figures")]
    assert "figures/learning_curves.png" in figures


def test_a_tracked_run_is_in_mlflow_as_its_directory_records_it(tmp_path, synthetic_archive):
    db, run_dir = tmp_path / "mlflow.db", tmp_path / "run"
    done = run_cnnlab("train", "--track", "mlflow", "--data", synthetic_archive, *TINY_DATA, *TINY_MODEL, *FLOAT32,
                      "--epochs", "2", "--out", run_dir, env=tracking(db))
    assert done.returncode == 0, done.stderr
    assert "mlflow" not in done.stderr.lower()  # nothing of MLflow's own chatter
    assert_mlflow_holds_the_run(db, run_dir)
    assert not [path for path in run_dir.rglob("*") if "mlflow" in path.name.lower()]  # the run directory is as ever


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}",
                                 pytest.param("nosuchscheme://nowhere", marks=pytest.mark.slow)],
                         ids=["down", "misconfigured"])
def test_a_tracker_that_is_down_or_misconfigured_is_one_warning_never_a_failed_run(tmp_path, synthetic_archive, uri):
    run_dir = tmp_path / "run"
    done = run_cnnlab("train", "--track", "mlflow", "--data", synthetic_archive, *TINY_DATA, *TINY_MODEL, *FLOAT32,
                      "--out", run_dir, env={"MLFLOW_TRACKING_URI": uri.format(port=free_port())})
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "mlflow" in line.lower()]
    assert len(said) == 1 and said[0].startswith("warning: MLflow tracking at"), done.stderr
    assert 0 <= run_metrics(run_dir)["test_accuracy"] <= 1


# The CNN in the default tier, every other kind in the full tier: the tracker reads only the run directory, which
# every kind writes alike.
@pytest.mark.parametrize("kind", ["cnn", *(pytest.param(kind, marks=pytest.mark.slow) for kind in TINY_KINDS
                                           if kind != "cnn")])
def test_track_mirrors_a_finished_run_of_each_kind_once_however_often_it_is_told(tmp_path, kind_runs, kind):
    db = tmp_path / "mlflow.db"
    for _ in range(2):  # the second time finds the MLflow run of the first and adds nothing twice
        done = run_cnnlab("track", kind_runs[kind], env=tracking(db))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{kind_runs[kind]}: logged to MLflow at sqlite:///{db}")
    assert_mlflow_holds_the_run(db, kind_runs[kind])


def test_track_without_mlflow_reachable_fails_in_one_line(tmp_path, trained_run):
    done = run_cnnlab("track", trained_run, env={"MLFLOW_TRACKING_URI": "nosuchscheme://nowhere"})
    assert done.returncode == 1 and done.stderr.splitlines()[-1].startswith(f"cnnlab: error: {trained_run} was not "
                                                                           "logged to MLflow")


@pytest.mark.slow  # MLflow's own page; what it reads is checked by test_a_tracked_run_is_in_mlflow_as_its_directory_records_it
def test_mlflow_ui_shows_the_tracked_runs_in_a_browser(tmp_path, trained_run, chromium):
    from playwright.sync_api import expect, sync_playwright

    db, run_dir = tmp_path / "mlflow.db", shutil.copytree(trained_run, tmp_path / "seen-in-the-browser")
    assert run_cnnlab("track", run_dir, env=tracking(db)).returncode == 0
    _, run = mlflow_run(db, run_dir)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{db}",
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _answers(f"{url}/health"):
            assert server.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright, chromium, tmp_path / "profile")
            page = browser.new_page()
            page.goto(f"{url}/#/experiments/{run.info.experiment_id}/runs")  # its "Training runs" tab
            expect(page.get_by_text("seen-in-the-browser").first).to_be_visible(timeout=60_000)
            page.goto(f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
            expect(page.get_by_text("test_accuracy").first).to_be_visible(timeout=60_000)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
