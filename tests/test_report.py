import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnnlab import rundir
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import CnnlabError
from cnnlab.report import FinishedRun, build_report, mcnemar_p_value, verdict_paragraph


def fake_run(correct, seconds, model="cnn", weights="imagenet", images=10_000):
    """A finished run that got exactly the test images in `correct` right (all labels are class 0)."""
    config = load_config("seed", {"model": model, "vgg16.weights": weights})
    probabilities = np.zeros((images, 10))
    probabilities[:, 1] = 1.0
    probabilities[correct] = np.eye(10)[0]
    metrics = {"test_accuracy": len(correct) / images, "train_seconds": seconds}
    return FinishedRun(Path(model), config, metrics, {}, probabilities, np.zeros(images, int))


def test_verdict_names_the_winner_and_the_margin():
    runs = [fake_run(np.arange(7000), 600), fake_run(np.arange(8500), 1200, "vgg16")]
    text = verdict_paragraph(runs, ["CNN", "VGG16"])
    assert text.startswith("VGG16 reached 85.00% test accuracy against 70.00% for CNN, 15.0 points higher "
                           "(McNemar's test on the same 10,000 test images: p < 0.001).")
    assert "CNN trained in 10.0 min, 2.0x faster than VGG16 (20.0 min)." in text
    assert "tie" not in text and "random weights" not in text


def test_verdict_calls_a_gap_within_chance_a_tie_and_flags_random_vgg16():
    # 0.5 points apart, but each model gets about 1,000 images right that the other gets wrong: no real difference.
    runs = [fake_run(np.arange(7000), 60), fake_run(np.r_[0:6000, 7000:8050], 90, "vgg16", "none")]
    text = verdict_paragraph(runs, ["CNN", "VGG16"])
    assert "VGG16 reached 70.50% test accuracy against 70.00% for CNN, 0.5 points higher, a difference" in text
    assert "call it a tie" in text
    assert "VGG16 here started from random weights, not ImageNet" in text


def test_mcnemar_p_value():
    right = np.array([True] * 60 + [False] * 40)
    assert mcnemar_p_value(right, right) == 1.0
    # 30 discordant pairs all one way: chi2 = 29^2/30 = 28.03, p ~ 1.2e-7
    other = right.copy()
    other[:30] = False
    assert mcnemar_p_value(right, other) == pytest.approx(1.2e-7, rel=0.05)


def test_compare_writes_two_runs_and_a_self_contained_report(compared):
    for name in ("cnn", "vgg16"):
        assert json.loads((compared / name / "status.json").read_text())["state"] == "finished"
    vgg_metrics = json.loads((compared / "vgg16" / "metrics.json").read_text())
    assert vgg_metrics["label"] == "VGG16 from scratch" and vgg_metrics["weights"] == "none"
    assert [phase["name"] for phase in vgg_metrics["phases"]] == ["head", "finetune"]
    page = (compared / "report.html").read_text()
    assert "CNN from scratch" in page and "VGG16 from scratch" in page and "fine-tuned" not in page
    for heading in ("Learning curves", "Per-class accuracy", "Confusion matrix: CNN from scratch",
                    "Confusion matrix: VGG16 from scratch", "Test images and predictions", "Environment"):
        assert heading in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 5 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    markdown = (compared / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", markdown)
    assert len(links) == 5 and all((compared / link).is_file() for link in links)
    assert "| CNN from scratch |" in markdown and "| VGG16 from scratch |" in markdown


def test_report_command_on_finished_runs(compared, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["report", str(compared / "cnn"), str(compared / "vgg16"), "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "report: " in capsys.readouterr().out
    before = (out / "report.html").read_bytes()
    assert main(["report", str(compared / "cnn"), "--out", str(out)]) == 1
    assert "already holds a report" in capsys.readouterr().err
    assert (out / "report.html").read_bytes() == before  # an earlier report is never overwritten


def test_report_refuses_unfinished_runs_and_writes_nothing(compared, tmp_path, capsys):
    unfinished = rundir.create_run_dir(tmp_path / "unfinished")
    rundir.write_json(unfinished / rundir.CONFIG, {})
    rundir.set_status(unfinished, "failed", "interrupted by the user")
    out = tmp_path / "report"
    code = main(["report", str(compared / "cnn"), str(unfinished), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "is not a finished run (status: failed: interrupted by the user)" in err
    assert not out.exists()
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        build_report([tmp_path], tmp_path / "nowhere")


def test_report_refuses_runs_scored_on_different_test_sets(compared, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(compared / "vgg16", other)
    with np.load(other / rundir.TEST_PREDICTIONS) as stored:
        probabilities, labels = stored["probabilities"], stored["labels"]
    np.savez(other / rundir.TEST_PREDICTIONS, probabilities=probabilities, labels=(labels + 1) % 10)
    with pytest.raises(CnnlabError, match="different test sets"):
        build_report([compared / "cnn", other], tmp_path / "report")


def test_report_opens_offline_in_a_real_browser(compared, chromium, tmp_path):
    """Every image loads and nothing is requested from the network; the screenshot is kept for a person to see."""
    from playwright.sync_api import sync_playwright

    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, viewport={"width": 1200, "height": 900},
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto((compared / "report.html").as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        page.screenshot(path=str(compared / "report-screenshot.png"), full_page=True)
        browser.close()
    assert len(images) == 5 and all(complete and width > 0 for complete, width in images)
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert (compared / "report-screenshot.png").stat().st_size > 10_000


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, installed here if it is missing (CI runs as root with the package registry reachable)."""
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
                       shell=True, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed and could not be installed here")
    return path


def test_compare_can_reuse_finished_runs(compared, tmp_path, capsys):
    out = tmp_path / "reused"
    assert main(["compare", "--runs", str(compared / "cnn"), str(compared / "vgg16"), "--out", str(out)]) == 0
    assert "VGG16 from scratch" in (out / "report.md").read_text()
    assert not (out / "cnn").exists()  # nothing was trained again


def test_compare_refuses_a_preset_for_another_model_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "fast-compare"
    assert main(["compare", "--preset", "fast", "--data", str(tmp_path / "unused"), "--out", str(out)]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("cnnlab: error: compare trains the CNN and VGG16 under one recipe")
    assert "'fastnet'" in error and "cnnlab report RUN_DIR RUN_DIR" in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_report_without_the_data_source_leaves_out_the_grid(compared, tmp_path, capsys, monkeypatch):
    from cnnlab import experiment

    def gone(*args, **kwargs):
        raise CnnlabError("data path not found: /moved")

    monkeypatch.setattr(experiment, "load_cifar10", gone)
    out = tmp_path / "no-grid"
    assert main(["report", str(compared / "cnn"), str(compared / "vgg16"), "--out", str(out)]) == 0
    assert "no prediction grid" in capsys.readouterr().err
    assert "Test images and predictions" not in (out / "report.html").read_text()
