import html
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt  # comes with Keras (through rich): a CommonMark renderer to check against

from cnnlab.cli import build_parser, main
from cnnlab.common.errors import CnnlabError
from cnnlab.config import RunConfig, load_config, parse_overrides, preset_measured
from cnnlab.evaluation import stats
from cnnlab.evaluation.scoring import metrics_from_probabilities
from cnnlab.models import compared_kinds
from cnnlab.report.builder import FinishedRun, build_report, load_finished_run
from cnnlab.report.sections import SECTIONS
from cnnlab.report.tables import reproduce_command
from cnnlab.report.verdict import verdict_paragraph
from cnnlab.runs import rundir
from conftest import CLASS_NAMES, launch_chromium


def fake_run(correct, seconds, model="cnn", weights="imagenet", images=10_000, seed=0):
    """A finished run that got exactly the test images in `correct` right (all labels are class 0)."""
    config = load_config("seed", {"model": model, "vgg16.weights": weights, "train.seed": seed})
    probabilities = np.zeros((images, 10))
    probabilities[:, 1] = 1.0
    probabilities[correct] = np.eye(10)[0]
    metrics = {"test_accuracy": len(correct) / images, "train_seconds": seconds, "label": model.upper()}
    return FinishedRun(Path(model), config, metrics, {}, probabilities, np.zeros(images, int))


def test_verdict_compares_setups_of_several_seeds_by_their_runs():
    runs = [fake_run(np.arange(7000), 60, seed=0), fake_run(np.arange(7100), 80, seed=1),
            fake_run(np.arange(8500), 600, "vgg16", seed=0), fake_run(np.arange(8400), 700, "vgg16", seed=1)]
    text = verdict_paragraph(runs, ["CNN a", "CNN b", "VGG16 a", "VGG16 b"])
    assert text.startswith("VGG16 reached 84.50% ± 0.71 points (mean ± sd of 2 seeds) test accuracy against "
                           "70.50% ± 0.71 points (mean ± sd of 2 seeds) for CNN, 14.0 points higher; every pair of "
                           "their runs differs beyond chance (McNemar's test, Holm-corrected over every pair of runs).")
    assert "CNN trained in 70 s, 9.3x faster than VGG16 (10.8 min)." in text
    # within noise of each other: each pair of runs gets about 500 images right that the other gets wrong, both ways
    close = [fake_run(np.arange(7000), 60, seed=0), fake_run(np.r_[0:6500, 7000:7510], 60, seed=1),
             fake_run(np.r_[0:6000, 7000:8020], 60, "vgg16", seed=0), fake_run(np.arange(500, 7530), 60, "vgg16", seed=1)]
    assert "no pair of their runs differs beyond chance: call it a tie" in verdict_paragraph(close, list("abcd"))


def test_verdict_names_the_winner_and_the_margin():
    runs = [fake_run(np.arange(7000), 600), fake_run(np.arange(8500), 1200, "vgg16")]
    text = verdict_paragraph(runs, ["CNN", "VGG16"])
    assert text.startswith("VGG16 reached 85.00% test accuracy against 70.00% for CNN, 15.0 points higher "
                           "(McNemar's test on the same 10,000 test images: p < 0.001).")
    assert "CNN trained in 10.0 min, 2.0x faster than VGG16 (20.0 min)." in text
    assert "tie" not in text and "random weights" not in text


def test_verdict_of_three_runs_holm_corrects_the_winners_comparisons():
    """The winner is tested against each of two others: their p-values are Holm-corrected over the two tests, so
    gaps that one test alone would call significant (p about 0.04 each) are ties among two."""
    from cnnlab.report.verdict import p_text

    best = fake_run(np.arange(7000), 60)
    # each loses 100 of the winner's images and gains 72 others, different ones
    others = [fake_run(np.r_[0:6900, 7000:7072], 60, "vgg16"), fake_run(np.r_[100:7000, 8000:8072], 60, "fastnet")]
    raw = [stats.mcnemar_p_value(best.probabilities.argmax(1) == 0, run.probabilities.argmax(1) == 0)
           for run in others]
    adjusted = stats.holm_adjusted(raw)
    assert max(raw) < 0.05 < min(adjusted)
    text = verdict_paragraph([best, *others], ["CNN", "VGG16", "FAST"])
    for name, p_value in zip(("VGG16", "FAST"), adjusted):
        assert (f"against 69.72% for {name}, 0.3 points higher, a difference McNemar's test, Holm-corrected over 2 "
                f"comparisons, on the same 10,000 test images cannot tell from chance ({p_text(p_value)}): call it a "
                "tie") in text


def test_verdict_calls_a_gap_within_chance_a_tie_and_flags_random_vgg16():
    # 0.5 points apart, but each model gets about 1,000 images right that the other gets wrong: no real difference.
    runs = [fake_run(np.arange(7000), 60), fake_run(np.r_[0:6000, 7000:8050], 90, "vgg16", "none")]
    text = verdict_paragraph(runs, ["CNN", "VGG16"])
    assert "VGG16 reached 70.50% test accuracy against 70.00% for CNN, 0.5 points higher, a difference" in text
    assert "call it a tie" in text
    assert "VGG16 here started from random weights, not ImageNet" in text



def test_compare_writes_two_runs_and_a_self_contained_report(compared):
    for name in ("cnn", "vgg16"):
        assert json.loads((compared / name / "status.json").read_text())["state"] == "finished"
    vgg_metrics = json.loads((compared / "vgg16" / "metrics.json").read_text())
    # the tests' VGG16 stops at block 2 (conftest.TINY_VGG16; quick's at block 4), and its label says so
    assert vgg_metrics["label"] == "VGG16 to block 2 from scratch" and vgg_metrics["weights"] == "none"
    # where it computed, as the run's Placement says (cnnlab.backends)
    assert vgg_metrics["backend"] in ("tensorflow", "jax", "torch") and vgg_metrics["devices"] == 1
    assert vgg_metrics["precision"] in ("float32", "bfloat16", "float16") and vgg_metrics["precision_reason"]
    assert [phase["name"] for phase in vgg_metrics["phases"]] == ["head", "finetune"]
    page = (compared / "report.html").read_text()
    assert "CNN from scratch" in page and "VGG16 to block 2 from scratch" in page and "fine-tuned" not in page
    # headings name the runs by their short names; the results table gives each beside its full label
    for heading in ("Learning curves", "Per-class accuracy", "Confusion matrix: CNN", "Confusion matrix: VGG16",
                    "Most confident mistakes: CNN", "Most confident mistakes: VGG16", "Per-class numbers", "Settings",
                    "Environment"):
        assert f"<h2>{heading}</h2>" in page
    # VGG16 trained a head phase, then fine-tuned: the curves mark where the second phase began
    assert "A dotted vertical line marks where a new phase began" in page
    pictures = 4 + 2 + page.count("<h2>Where the models disagree</h2>")  # curves, classes, 2 matrices; mistakes
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == pictures and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    markdown = (compared / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", markdown)
    assert len(links) == pictures and all((compared / link).is_file() for link in links)
    assert "| CNN | CNN from scratch |" in markdown and "| VGG16 | VGG16 to block 2 from scratch |" in markdown


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
        browser = launch_chromium(playwright, chromium, tmp_path / "profile")
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto((compared / "report.html").as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        # The per-class tables start folded; a click on a summary unfolds that run's tables
        shown = ("Array.from(document.querySelectorAll('details.per-class table'))"
                 ".map(t => [t.className, t.checkVisibility(), t.rows.length])")
        folded = page.evaluate(shown)
        folded_height = page.evaluate("document.querySelector('details.per-class').getBoundingClientRect().height")
        page.click("details.per-class summary")
        unfolded = page.evaluate(shown)
        unfolded_height = page.evaluate("document.querySelector('details.per-class').getBoundingClientRect().height")
        # The settings differ in the model and its label: those rows are highlighted, an equal one is not
        highlighted = page.evaluate("Array.from(document.querySelectorAll('table.settings tr.differs'))"
                                    ".map(r => [r.cells[0].textContent, getComputedStyle(r.cells[1]).backgroundColor])")
        plain = page.evaluate("getComputedStyle(Array.from(document.querySelectorAll('table.settings tr'))"
                              ".find(r => r.cells[0].textContent === 'train.seed').cells[1]).backgroundColor")
        page.screenshot(path=str(compared / "report-screenshot.png"), full_page=True)
        browser.close()
    assert len(images) == 4 + 2 + int("Where the models disagree" in (compared / "report.html").read_text())
    assert all(complete and width > 0 for complete, width in images)
    assert not any(visible for _, visible, _ in folded)
    assert [name for name, visible, _ in unfolded if visible] == ["classes", "confusion"]  # the first run's, unfolded
    assert unfolded_height > folded_height + 200
    assert [rows for name, _, rows in unfolded] == [11, 11] * 2  # a header and 10 classes, in both runs' tables
    assert "model" in dict(highlighted) and "train.seed" not in dict(highlighted)
    assert len({colour for _, colour in highlighted}) == 1 and plain not in dict(highlighted).values()
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert (compared / "report-screenshot.png").stat().st_size > 10_000


def test_compare_can_reuse_finished_runs(compared, tmp_path, capsys, monkeypatch):
    # Reporting trains nothing: settings for a run over several processes, left in the environment, play no part.
    monkeypatch.setenv("CNNLAB_PROCESSES", "2")
    monkeypatch.setenv("CNNLAB_PROCESS_ID", "1")
    out = tmp_path / "reused"
    assert main(["compare", "--runs", str(compared / "cnn"), str(compared / "vgg16"), "--out", str(out)]) == 0
    assert "VGG16 to block 2 from scratch" in (out / "report.md").read_text()
    assert not (out / "cnn").exists()  # nothing was trained again
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.html'} (and report.md beside it)"


def test_compare_refuses_a_preset_for_another_model_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "fast-compare"
    assert main(["compare", "--preset", "fast", "--data", str(tmp_path / "unused"), "--out", str(out)]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"cnnlab: error: compare trains {' and '.join(compared_kinds())} under one recipe")
    assert "'fastnet'" in error and "cnnlab report RUN_DIR RUN_DIR" in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_report_without_the_data_source_leaves_out_the_test_images(compared, tmp_path, capsys, monkeypatch):
    from cnnlab.runs import run

    def gone(*args, **kwargs):
        raise CnnlabError("data path not found: /moved")

    monkeypatch.setattr(run, "load_dataset", gone)
    out = tmp_path / "no-grid"
    assert main(["report", str(compared / "cnn"), str(compared / "vgg16"), "--out", str(out)]) == 0
    assert "no pictures of test images" in capsys.readouterr().err
    page = (out / "report.html").read_text()
    assert "Most confident mistakes" not in page and "Where the models disagree" not in page
    assert "<h2>Per-class numbers</h2>" in page  # the rest of the report is there


# ---------------------------------------------------------------------------------------------------------------------
# Run directories written by hand: hostile names, damaged or tampered predictions

REPORT_RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])  # raw HTML passes through
HOSTILE_CLASSES = ["<script>alert(1)</script>", "a|b", "**bold**", "[x](javascript:alert(1))", "line\nbreak",
                   "$\\nosuch$", "<img src=x onerror=alert(1)>", "`code`", "&amp;", "\x1b[31mred"]


def write_finished_run(path: Path, classes=tuple(CLASS_NAMES), label="CNN from scratch", images=20) -> Path:
    """A finished run directory as `cnnlab train` leaves it, written directly: what the report reads."""
    rngs = np.random.default_rng(len(path.name))
    labels = (np.arange(images) % len(classes)).astype(np.uint8)
    probabilities = rngs.dirichlet(np.ones(len(classes)), images).astype(np.float16)
    path.mkdir(parents=True)
    rundir.write_json(path / rundir.CONFIG, RunConfig().to_dict())
    rundir.set_status(path, "finished")
    (path / rundir.MODEL).write_bytes(b"")
    (path / rundir.HISTORY).write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.5,0.4,1.6\n1,0.6,1.2,0.5,1.4\n")
    np.savez(path / rundir.TEST_PREDICTIONS, probabilities=probabilities, labels=labels)
    metrics = metrics_from_probabilities(probabilities.astype(np.float32), labels, tuple(classes))
    metrics.update(label=label, parameters=1000, trainable_parameters=1000, epochs=1, train_seconds=10.0,
                   seconds_per_epoch=10.0, phases=[], data={"classes": list(classes)}, hardware={}, versions={})
    rundir.write_json(path / rundir.METRICS, metrics)
    return path


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
def test_report_of_runs_with_hostile_names_escapes_html_and_markdown(tmp_path):
    # Both runs carry the same hostile label, so the report tells them apart by their (hostile) folder names.
    label = "[x](javascript:alert(1)) <script>alert(1)</script>"
    runs = [write_finished_run(tmp_path / name, HOSTILE_CLASSES, label)
            for name in ("<script>alert(1)", "a|b **bold** [x](javascript:alert(1))\n$\\nosuch$")]
    out = tmp_path / "report"
    build_report(runs, out)

    page = (out / "report.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert html.escape("<script>alert(1)</script>") in page and html.escape("(<script>alert(1))") in page
    assert [src for src in re.findall(r'src="([^"]*)"', page) if not src.startswith("data:image/png")] == []
    results = page.split('<table class="results">')[1].split("</table>")[0]
    assert results.count("<tr>") == 3 and all(row.count("<td>") == 16 for row in results.split("<tr>")[2:])

    markdown = (out / "report.md").read_text()
    rendered = REPORT_RENDERER.render(markdown)
    assert "<script" not in rendered.lower() and "<a " not in rendered and "<strong>" not in rendered
    assert re.findall(r'<img src="([^"]*)"', rendered) == [f"figures/{name}.png" for name in (
        "learning_curves", "per_class_accuracy", "confusion_matrix_1", "confusion_matrix_2")]
    rows = rendered.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 2 and all(row.count("<td>") == 16 for row in rows)
    cells = [[html.unescape(cell.split("</td>")[0]) for cell in row.split("<td>")[1:3]] for row in rows]
    assert cells == [["[x](javascript:alert(1))-1", f"{label} (<script>alert(1))"],
                     ["[x](javascript:alert(1))-2", f"{label} (a|b **bold** [x](javascript:alert(1))\\n$\\nosuch$)"]]
    headings = re.findall(r"<h2>(.*?)</h2>", rendered)
    assert "Confusion matrix: [x](javascript:alert(1))-2" in map(html.unescape, headings)


@pytest.fixture
def finished_run(tmp_path):
    return write_finished_run(tmp_path / "run")


def npz_bytes(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def npy_header(shape, dtype) -> bytes:
    """The .npy header alone: an array that claims `shape` without any of its data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


def valid_members(run_dir):
    with np.load(run_dir / rundir.TEST_PREDICTIONS) as stored:
        return {f"{name}.npy": npy_bytes(stored[name]) for name in ("probabilities", "labels")}


def test_predictions_claiming_40_gib_are_refused_without_allocating(finished_run):
    members = valid_members(finished_run)
    members["probabilities.npy"] = npy_header((2**31, 10), np.float16) + b"\0" * 64  # 40 GiB of float16
    (finished_run / rundir.TEST_PREDICTIONS).write_bytes(npz_bytes(members))
    tracemalloc.start()
    try:
        with pytest.raises(CnnlabError, match=r"is damaged \(probabilities.npy holds float16 \(2147483648, 10\), "
                                              r"expected float16 \(20, 10\)\)$"):
            load_finished_run(finished_run)
        assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    finally:
        tracemalloc.stop()


def test_metrics_claiming_billions_of_test_images_are_refused(finished_run):
    metrics = rundir.read_json(finished_run / rundir.METRICS)
    metrics["confusion_matrix"][0][0] = 2**40
    rundir.write_json(finished_run / rundir.METRICS, metrics)
    with pytest.raises(CnnlabError, match=r"metrics.json is damaged \(its confusion matrix counts 1,099,"):
        load_finished_run(finished_run)


def replaced_predictions(run_dir, content: bytes) -> Path:
    (run_dir / rundir.TEST_PREDICTIONS).write_bytes(content)
    return run_dir


@pytest.mark.parametrize("damage, message", [
    (lambda members: members | {"evil.npy": b""}, "holds 'probabilities.npy', 'labels.npy', 'evil.npy', expected"),
    (lambda members: {"probabilities.npy": members["probabilities.npy"]}, "holds 'probabilities.npy', expected"),
    (lambda members: members | {"labels.npy": npy_bytes(np.zeros(20, np.int64))},
     "labels.npy holds int64 (20,), expected uint8 (20,)"),
    (lambda members: members | {"labels.npy": npy_bytes(np.zeros(20, object))}, "labels.npy holds object"),
    (lambda members: members | {"labels.npy": members["labels.npy"][:-1]}, "labels.npy is 147 bytes, expected 148"),
    (lambda members: members | {"labels.npy": npy_bytes(np.full(20, 10, np.uint8))}, "a label is not one of the 10"),
])
def test_predictions_with_wrong_members_are_damaged(finished_run, damage, message):
    replaced_predictions(finished_run, npz_bytes(damage(valid_members(finished_run))))
    with pytest.raises(CnnlabError, match="test_predictions.npz is damaged") as caught:
        load_finished_run(finished_run)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_predictions_zip_bomb_is_refused_before_inflating(finished_run):
    members = valid_members(finished_run)
    members["labels.npy"] = npy_header((20,), np.uint8) + bytes(20) + bytes(32 * 2**20)  # 32 MiB of zeros: 32 kB
    replaced_predictions(finished_run, npz_bytes(members, zipfile.ZIP_DEFLATED))
    with pytest.raises(CnnlabError, match=r"is damaged \(labels.npy is larger than its array can be\)"):
        load_finished_run(finished_run)


def test_predictions_file_that_is_no_zip_is_damaged(finished_run):
    replaced_predictions(finished_run, b"not a zip archive at all\n" * 10)
    with pytest.raises(CnnlabError, match=r"test_predictions.npz is damaged \(File is not a zip file\)"):
        load_finished_run(finished_run)


def test_predictions_written_compressed_still_load(finished_run):
    replaced_predictions(finished_run, npz_bytes(valid_members(finished_run), zipfile.ZIP_DEFLATED))
    run = load_finished_run(finished_run)
    assert run.probabilities.shape == (20, 10) and run.labels.tolist() == list(range(10)) * 2


@given(st.data())
def test_fuzz_mutated_predictions_load_or_are_damaged(finished_run, data):
    valid = (finished_run / rundir.TEST_PREDICTIONS).read_bytes()
    mutated = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    mutated = mutated[: data.draw(st.integers(0, len(mutated)))] if data.draw(st.booleans()) else mutated
    (finished_run / rundir.TEST_PREDICTIONS).write_bytes(bytes(mutated))
    try:
        run = load_finished_run(finished_run)
    except CnnlabError as exc:
        assert "is damaged (" in str(exc) and "\n" not in str(exc)
    else:
        assert run.probabilities.shape == (20, 10) and run.labels.shape == (20,) and run.labels.max() < 10
    finally:
        (finished_run / rundir.TEST_PREDICTIONS).write_bytes(valid)


def test_the_report_module_imports_no_keras():
    # `cnnlab report` reads finished runs; Keras would add seconds to every report for nothing.
    code = "import sys, cnnlab.report.builder; assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# What the report states beyond the verdict: intervals, seeds, pairwise tests, per-class numbers, settings


def with_settings(run_dir: Path, overrides: dict, label: str | None = None) -> Path:
    """Give a hand-written run other settings (and label) than write_finished_run's."""
    rundir.write_json(run_dir / rundir.CONFIG, load_config("seed", overrides).to_dict())
    if label:
        metrics = json.loads((run_dir / rundir.METRICS).read_text())
        rundir.write_json(run_dir / rundir.METRICS, {**metrics, "label": label})
    return run_dir


def markdown_table(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table after `heading`, as text, header row first."""
    table = next(block for block in markdown.split(heading, 1)[1].split("\n\n") if block.startswith("|"))
    rows = [line for line in table.splitlines() if "---|" not in line]
    return [[html.unescape(cell.strip()).replace("\\", "") for cell in row.strip("| ").split(" | ")] for row in rows]


def test_report_groups_seeds_and_tests_every_pair_with_holm(tmp_path):
    # write_finished_run draws predictions seeded by the folder name's length: these get different ones
    runs = [with_settings(write_finished_run(tmp_path / name, images=200), {"train.seed": seed})
            for seed, name in ((0, "cnn-0"), (1, "cnn-seed1"))]
    runs.append(with_settings(write_finished_run(tmp_path / "vgg", images=200), {"model": "vgg16"}, "VGG16"))
    build_report(runs, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    loaded = [load_finished_run(run) for run in runs]
    accuracies = [run.metrics["test_accuracy"] for run in loaded]

    groups = markdown_table(markdown, "## Runs of one setup, grouped")
    mean, sd = np.mean(accuracies[:2]), np.std(accuracies[:2], ddof=1)
    assert groups[1] == ["CNN from scratch", "2", f"{mean:.2%} ± {sd * 100:.2f} points",
                         f"seed 0: {accuracies[0]:.2%}; seed 1: {accuracies[1]:.2%}"] and len(groups) == 2
    assert f"{mean:.2%} ± {sd * 100:.2f} points (mean ± sd of 2 seeds)" in markdown  # in the verdict

    pairs = markdown_table(markdown, "## Every pair of runs")[1:]
    right = [run.probabilities.argmax(1) == run.labels for run in loaded]
    p_values = [stats.mcnemar_p_value(right[i], right[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    holm = stats.holm_adjusted(p_values)
    assert [row[:2] for row in pairs] == [["CNN-1", "CNN-2"], ["CNN-1", "VGG16"], ["CNN-2", "VGG16"]]
    for row, p_value, adjusted in zip(pairs, p_values, holm):
        assert row[3] == _p(p_value) and row[4] == _p(adjusted) and row[5] == ("yes" if adjusted < 0.05 else "no (a tie)")

    results = markdown_table(markdown, "## Results")
    assert [row[:2] for row in results[1:]] == [["CNN-1", "CNN from scratch (cnn-0)"],
                                                ["CNN-2", "CNN from scratch (cnn-seed1)"], ["VGG16", "VGG16"]]
    for row, run in zip(results[1:], loaded):
        correct = round(run.metrics["test_accuracy"] * 200)
        low, high = stats.wilson_interval(correct, 200)
        assert row[3] == f"{low:.2%} to {high:.2%}"
        assert row[4] == f"{stats.top_k_accuracy(run.probabilities, run.labels, 5):.2%}"


def _p(p_value):
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def test_both_documents_draw_the_same_sections_in_order(tmp_path):
    # One list of sections draws both documents: the same headings in the same order, every titled section there.
    runs = [with_corruption_scores(write_finished_run(tmp_path / name, images=200), 0.5) for name in ("a", "bb", "ccc")]
    build_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    headings = [html.unescape(heading) for heading in re.findall(r"<h2>(.*?)</h2>", page)]
    assert headings == [heading.replace("\\", "") for heading in re.findall(r"^## (.*)$", markdown, re.MULTILINE)]
    titles = [section.title for section in SECTIONS if section.title and section.key != "search"]  # a search's only
    assert [heading for heading in headings if heading in titles] == titles
    assert "Confusion matrix: CNN-3" in headings


def test_two_runs_get_no_pairwise_table_and_no_groups_of_different_setups(tmp_path):
    runs = [write_finished_run(tmp_path / "a"),
            with_settings(write_finished_run(tmp_path / "b"), {"train.seed": 1, "train.epochs": 3})]
    build_report(runs, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Every pair of runs" not in markdown and "Runs of one setup" not in markdown and "mean ± sd" not in markdown


def test_per_class_numbers_and_top_confusions_are_the_runs_own(tmp_path):
    run = write_finished_run(tmp_path / "run", images=300)
    build_report([run], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    confusion = np.array(json.loads((run / rundir.METRICS).read_text())["confusion_matrix"])
    table = markdown_table(markdown, "### CNN")
    assert table[0] == ["class", "precision", "recall", "F1", "test images"]
    for row, (precision, recall, f1) in zip(table[1:], stats.precision_recall_f1(confusion)):
        assert row[1:4] == [f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}"]
    true, predicted, count = stats.top_confusions(confusion, 1)[0]
    assert f"- {CLASS_NAMES[true]} taken for {CLASS_NAMES[predicted]}: {count} images" in markdown
    matrix = markdown_table(markdown, "Most frequent mistakes:")
    assert [[int(cell) for cell in row[1:]] for row in matrix[1:]] == confusion.tolist()


def test_settings_highlight_what_differs_and_the_command_trains_the_same_run(tmp_path):
    weights = tmp_path / "my weights 'v2'.weights.h5"
    runs = [with_settings(write_finished_run(tmp_path / "a"), {"model": "vgg16", "vgg16.weights": str(weights),
                                                               "vgg16.head_units": [64, 32], "data.flip": True}),
            with_settings(write_finished_run(tmp_path / "b"), {"model": "vgg16", "train.seed": 7})]
    build_report(runs, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    settings = page.split('<table class="settings">')[1].split("</table>")[0]
    highlighted = {row.split("<td>")[1].split("</td>")[0] for row in settings.split("<tr")[2:] if 'class="differs"' in row}
    assert {"train.seed", "vgg16.weights", "vgg16.head_units", "data.flip", "command"} <= highlighted
    assert "model" not in highlighted and "train.epochs" not in highlighted
    for run in runs:
        config = load_finished_run(run).config
        words = shlex.split(reproduce_command(config))
        assert words[:4] == ["cnnlab", "train", "--preset", "seed"]
        build_parser().parse_args(words[1:])  # a command the CLI accepts
        settings = [word for before, word in zip(words, words[1:]) if before == "--set"]
        assert load_config("seed", parse_overrides(settings)) == config


def with_corruption_scores(run_dir: Path, level: float, images_sha256: str = "a" * 64) -> Path:
    """Give a hand-written run scores under every corruption: `level` at severity 1, falling 0.1 per severity."""
    from cnnlab.evaluation.corruptions import CORRUPTIONS
    from cnnlab.evaluation.scoring import corruption_record

    scores = {name: [max(level - 0.1 * step, 0.0) for step in range(5)] for name in CORRUPTIONS}
    metrics = json.loads((run_dir / rundir.METRICS).read_text())
    metrics["corruptions"] = corruption_record(0, metrics["test_accuracy"], scores, images_sha256, 1.0, 20)
    rundir.write_json(run_dir / rundir.METRICS, metrics)
    return run_dir


def test_report_compares_robustness_on_identical_corrupted_images_only(tmp_path):
    runs = [with_corruption_scores(write_finished_run(tmp_path / "a", label="CNN"), 0.6),
            with_corruption_scores(write_finished_run(tmp_path / "bb", label="VGG16"), 0.5)]
    build_report(runs, tmp_path / "same")
    markdown = (tmp_path / "same" / "report.md").read_text()
    records = [load_finished_run(run).metrics["corruptions"] for run in runs]
    assert records[0]["mean_accuracy"] == pytest.approx(0.4)  # 0.6, 0.5, 0.4, 0.3, 0.2
    assert (f"Under the common corruptions CNN held up best: 40.00% mean accuracy over the 15 corruptions at 5 "
            f"severities, 10.0 points more than VGG16 (30.00%), on the same 20 test images") in markdown
    table = markdown_table(markdown, "## Robustness: the common corruptions")
    assert table[1][:5] == ["CNN", "20", "0", f"{records[0]['clean_accuracy']:.2%}", "40.00%"]
    assert table[0][6:] == ["noise", "blur", "weather", "digital"]
    assert "![Accuracy under common corruptions](figures/corruption_accuracy.png)" in markdown

    with_corruption_scores(runs[1], 0.5, images_sha256="b" * 64)  # another seed or sample: other images
    build_report(runs, tmp_path / "other")
    markdown = (tmp_path / "other" / "report.md").read_text()
    assert "held up best" not in markdown and "scored on different corrupted images" in markdown
    build_report(runs[:1] + [write_finished_run(tmp_path / "ccc")], tmp_path / "one")  # one scored run: no comparison
    assert "held up best" not in (tmp_path / "one" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# What a new user sees: plain numbers, one unit per time column, short names in headings, tables that fit the page

LONG_LABEL = "VGG16 to block 4 on frozen vgg16_hed_notop.h5 features"


def with_metrics(run_dir: Path, **changes) -> Path:
    metrics = json.loads((run_dir / rundir.METRICS).read_text())
    rundir.write_json(run_dir / rundir.METRICS, {**metrics, **changes})
    return run_dir


@pytest.fixture
def long_label_report(tmp_path) -> tuple[Path, Path]:
    """A report of a CNN and a VGG16 whose label is long and whose weights file sits deep in folders: the report
    folder and the weights path."""
    weights = tmp_path / "a folder with weights" / "kept for the tutorial" / "vgg16_hed_notop.h5"
    vgg16 = with_settings(write_finished_run(tmp_path / "vgg16"), {"model": "vgg16", "vgg16.weights": str(weights)},
                          LONG_LABEL)
    build_report([write_finished_run(tmp_path / "cnn"), vgg16], tmp_path / "report")
    return tmp_path / "report", weights


def test_report_md_writes_numbers_as_they_read(tmp_path):
    # Only what Markdown would misread is escaped: no backslash before a number's point, a "<" or a missing value.
    runs = [write_finished_run(tmp_path / name, images=200) for name in ("a", "bb", "ccc")]
    build_report(runs, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert re.findall(r"\\[.<>&_-]", markdown) == []
    accuracy = load_finished_run(runs[0]).metrics["test_accuracy"]
    assert f"| CNN-1 | CNN from scratch (a) | {accuracy:.2%} | " in markdown
    assert "| - |" in markdown  # no inference timing: a dash, not "\-"
    assert "| true \\\\ predicted |" in markdown  # a backslash itself is still escaped


def test_each_time_column_of_the_results_is_in_one_unit(tmp_path):
    phases = [{"name": "head", "epochs": 1, "seconds_per_epoch": 20.5},
              {"name": "finetune", "epochs": 1, "seconds_per_epoch": 130.0}]
    runs = [with_metrics(write_finished_run(tmp_path / "a"), train_seconds=112.0, seconds_per_epoch=56.0),
            with_metrics(write_finished_run(tmp_path / "bb"), train_seconds=126.0, phases=phases)]
    build_report(runs, tmp_path / "minutes")
    table = markdown_table((tmp_path / "minutes" / "report.md").read_text(), "## Results")
    assert [row[9:11] for row in table] == [["training time (min)", "time per epoch (min)"], ["1.9", "0.93"],
                                            ["2.1", "head 0.34; finetune 2.2"]]

    with_metrics(runs[1], train_seconds=90.0, phases=[])
    build_report(runs, tmp_path / "seconds")  # all under 2 minutes: seconds
    table = markdown_table((tmp_path / "seconds" / "report.md").read_text(), "## Results")
    assert [row[9:11] for row in table] == [["training time (s)", "time per epoch (s)"], ["112", "56"], ["90", "10"]]


def test_the_results_give_the_flops_each_run_spent_training_and_testing(tmp_path):
    runs = [with_metrics(write_finished_run(tmp_path / "a"),
                         flops={"train": 4.1e14, "validation": 0.2e14, "test": 2.4e12, "forward_per_image": 2.4e8}),
            with_metrics(write_finished_run(tmp_path / "bb"), flops={"train": 5.0e9, "validation": 0, "test": 3.1e6}),
            write_finished_run(tmp_path / "ccc")]  # a run from before cnnlab counted them
    build_report(runs, tmp_path / "report")
    table = markdown_table((tmp_path / "report" / "report.md").read_text(), "## Results")
    column = table[0].index("FLOPs: training; test")
    assert [row[column] for row in table[1:]] == ["430 TFLOP; 2.4 TFLOP", "5 GFLOP; 3.1 MFLOP", "-; -"]


def test_headings_use_short_names_and_the_results_the_weights_file_name(long_label_report):
    out, weights = long_label_report
    markdown = (out / "report.md").read_text()
    results = markdown_table(markdown, "## Results")
    assert [row[:2] for row in results] == [["name", "model"], ["CNN", "CNN from scratch"], ["VGG16", LONG_LABEL]]
    assert results[0][-2] == "weights" and [row[-2] for row in results[1:]] == ["none (random init)",
                                                                               "vgg16_hed_notop.h5"]
    settings = markdown_table(markdown, "## Settings")
    assert next(row for row in settings if row[0] == "**vgg16.weights**")[2] == f"**{weights}**"  # the full path
    headings = [heading.replace("\\", "") for heading in re.findall(r"^#{2,3} (.*)$", markdown, re.MULTILINE)]
    assert {"Confusion matrix: CNN", "Confusion matrix: VGG16", "CNN", "VGG16"} <= set(headings)
    assert not any(LONG_LABEL in heading for heading in headings)
    page = (out / "report.html").read_text()
    assert not any(LONG_LABEL in html.unescape(heading) for heading in re.findall(r"<h2>(.*?)</h2>", page))


def test_every_table_of_the_page_scrolls_in_a_box_of_its_own(long_label_report):
    page = (long_label_report[0] / "report.html").read_text()
    assert page.count("<table") == page.count('<div class="table-box"><table') > 0
    assert re.search(r"\.table-box \{[^}]*overflow-x: auto", page)


def test_wide_tables_stay_inside_the_page_in_a_real_browser(long_label_report, chromium, tmp_path):
    """At 1300 px, no table runs off the page's right edge: a wide one scrolls sideways inside its box."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium, tmp_path / "profile", viewport=(1300, 900))
        page = browser.new_page()
        page.goto((long_label_report[0] / "report.html").as_uri(), wait_until="load")
        widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        boxes = page.evaluate("Array.from(document.querySelectorAll('table')).map(table => [table.className, "
                              "getComputedStyle(table.parentElement).overflowX, "
                              "table.parentElement.getBoundingClientRect().right])")
        browser.close()
    assert widths[0] <= widths[1] == 1300  # nothing wider than the window
    assert [name for name, _, _ in boxes][:1] == ["results"]
    assert all(overflow == "auto" and right <= 1300 for _, overflow, right in boxes)


def test_compare_says_its_plan_what_it_measured_before_and_each_model_in_turn(compared):
    said = (compared.parent / "compare.stderr").read_text()
    assert "compare under preset quick: CNN from scratch and VGG16 to block 2 from scratch, one after the other" in said
    assert said.index("model 1 of 2: CNN from scratch") < said.index("epoch 1/") < said.index("model 2 of 2: VGG16")
    assert all(f"measured before: {line}" in said for line in preset_measured()["quick"])  # machine and revision
    assert said.count("training CNN") == 1 and said.count("training VGG16") == 1  # each run says what it will train
