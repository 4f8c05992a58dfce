"""The backbones from the command line: `cnnlab models`, `compare --models` with several backbones under one
preset, resumed from its plan, and what `compare` fine-tunes by default."""

import json
import shutil

import pytest

from cnnlab.models import KINDS, compared_kinds, registry
from conftest import FLOAT32, TINY_DATA, TINY_MODEL, run_cnnlab, run_metrics

# Both backbones tiny, as conftest.tiny_backbone makes them: the backbone flags set each trained backbone's section
TINY_BACKBONES = ["--weights", "none", "--backbone-size", "32",
                  *(item for name in ("efficientnet_lite0", "mobilenetv3small")
                    for setting in ("top_block=2", "finetune_epochs=1", "head_batch_norm=true")
                    for item in ("--set", f"{name}.{setting}"))]


def test_models_lists_every_kind_and_where_each_backbones_weights_come_from():
    done = run_cnnlab("models")
    assert done.returncode == 0, done.stderr
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert set(KINDS) <= set(lines)
    assert lines["cnn"] == "cnn: CNN from scratch"
    installed = registry.efficientnet_lite0.imagenet_weights_installed()
    assert ("installed: no download" if installed else "not installed") in lines["efficientnet_lite0"]
    assert "ResNet50V2; weights ImageNet's, through Keras's own download" in lines["resnet50v2"]
    assert "4 blocks" in lines["convnexttiny"]


def test_compare_fine_tunes_efficientnet_lite0_where_its_imagenet_weights_are_installed(monkeypatch):
    monkeypatch.setattr(registry.efficientnet_lite0, "imagenet_weights_installed", lambda: True)
    assert compared_kinds() == ("cnn", "efficientnet_lite0")
    monkeypatch.setattr(registry.efficientnet_lite0, "imagenet_weights_installed", lambda: False)
    assert compared_kinds() == ("cnn", "vgg16")


def test_compare_trains_three_models_reports_on_all_and_resumes_from_its_plan(synthetic_archive, tmp_path):
    out = tmp_path / "three"
    models = ["cnn", "efficientnet_lite0", "mobilenetv3small"]
    done = run_cnnlab("compare", "--models", ",".join(models), "--preset", "quick", "--data", synthetic_archive,
                      *TINY_DATA, *TINY_MODEL, *TINY_BACKBONES, *FLOAT32, "--out", out)
    assert done.returncode == 0, done.stderr
    plan = json.loads((out / "compare.json").read_text())
    assert plan["models"] == models and plan["config"]["preset"] == "quick"  # and the settings each model trains with
    assert plan["config"]["efficientnet_lite0"]["top_block"] == plan["config"]["mobilenetv3small"]["top_block"] == 2
    assert "model 3 of 3: MobileNetV3Small to block 2 from scratch" in done.stderr
    markdown = (out / "report.md").read_text()
    for name in models:
        metrics = run_metrics(out / name)
        assert metrics["model"] == name and f"{metrics['test_accuracy']:.2%}" in markdown
    assert run_metrics(out / "efficientnet_lite0")["label"] == "EfficientNet-Lite0 to block 2 from scratch"

    # Lost: the last model and the report. --resume reads the plan, keeps the two finished runs, trains the third.
    kept = (out / "cnn" / "model.keras").read_bytes()
    shutil.rmtree(out / "mobilenetv3small")
    for name in ("report.md", "report.html"):
        (out / name).unlink()
    again = run_cnnlab("compare", "--resume", out)
    assert again.returncode == 0, again.stderr
    assert (out / "cnn" / "model.keras").read_bytes() == kept
    assert run_metrics(out / "mobilenetv3small")["model"] == "mobilenetv3small"
    assert f"{run_metrics(out / 'mobilenetv3small')['test_accuracy']:.2%}" in (out / "report.md").read_text()


@pytest.mark.parametrize("models, message", [
    ("cnn", "name two or more different models"),
    ("cnn,cnn", "name two or more different models"),
    ("cnn,resnet", "unknown model 'resnet'; `cnnlab models` lists them"),
])
def test_bad_model_lists_are_refused_in_one_line_before_anything_trains(models, message, tmp_path):
    done = run_cnnlab("compare", "--models", models, "--out", tmp_path / "out")
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_comparison_that_failed_before_its_first_run_resumes_from_its_plan_alone(synthetic_archive, tmp_path):
    """The data is missing: compare stops before any run, leaving its plan (models and configuration) alone in the
    folder; once the data is there, --resume trains every model from that plan."""
    archive = tmp_path / "later" / "cifar-10-python.tar.gz"
    out = tmp_path / "both"
    failed = run_cnnlab("compare", "--models", "cnn,efficientnet_lite0", "--preset", "quick", "--data", archive,
                        *TINY_DATA, *TINY_MODEL, *TINY_BACKBONES, *FLOAT32, "--out", out)
    assert failed.returncode != 0 and [path.name for path in out.iterdir()] == ["compare.json"]
    archive.parent.mkdir()
    shutil.copy(synthetic_archive, archive)
    resumed = run_cnnlab("compare", "--resume", out)
    assert resumed.returncode == 0, resumed.stderr
    assert run_metrics(out / "efficientnet_lite0")["label"] == "EfficientNet-Lite0 to block 2 from scratch"
    assert f"{run_metrics(out / 'cnn')['test_accuracy']:.2%}" in (out / "report.md").read_text()


def test_one_weights_file_for_two_backbones_is_refused_in_one_line(tmp_path):
    weights = tmp_path / "lite0.weights.h5"
    weights.write_bytes(b"")
    done = run_cnnlab("compare", "--models", "cnn,vgg16,efficientnet_lite0", "--weights", weights, "--print-config")
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        f"cnnlab: error: --weights {weights} would start vgg16 and efficientnet_lite0 from one file; set each "
        "backbone's weights in a preset ([NAME] weights = ...) or --set NAME.weights=PATH"]
