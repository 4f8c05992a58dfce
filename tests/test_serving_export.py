"""`cnnlab export`: the artifacts answer as the run's Keras model does (parity recomputed here, in each runtime),
refusals are one line and leave nothing behind, and `cnnlab predict` on the exported ONNX answers as on the run."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_KINDS, answers_of_run, copy_of, kind_params, run_cnnlab, run_metrics

ONNX_ONLY = ["--format", "onnx", "--parity-images", "64"]


def files_under(*folders) -> dict:
    return {path: path.read_bytes() for folder in folders for path in folder.rglob("*") if path.is_file()
            and path.name != ".lock"}


def recomputed_parity(run_dir, format, artifact, count):
    """What the parity check should find, computed here: the artifact in its runtime vs the Keras model as loaded."""
    from cnnlab.runs.run import Run
    from cnnlab.serving.export import load_artifact, parity_sample

    run = Run.open_finished(run_dir)
    images = parity_sample(run, count)
    expected = run.load_model(run.settings().class_names).predict(images, batch_size=32, verbose=0).astype(np.float64)
    answered = np.concatenate([load_artifact(format, artifact)(images[start:start + 32])
                               for start in range(0, len(images), 32)])
    assert answered.shape == expected.shape
    assert np.allclose(answered.sum(axis=1), 1, atol=1e-5)  # probabilities, not logits
    return np.abs(answered - expected).max(), (answered.argmax(1) == expected.argmax(1)).mean()


def test_export_records_the_parity_its_artifact_shows(run_copy, tmp_path):
    from cnnlab.serving.export import export_run

    out = tmp_path / "shipped" / "model.onnx"
    record = export_run(run_copy, "onnx", out, parity_images=64)
    difference, agreement = recomputed_parity(run_copy, "onnx", out, 64)
    assert record["max_abs_difference"] == pytest.approx(difference, rel=1e-6, abs=1e-12)
    assert record["top1_agreement"] == agreement == 1.0
    assert record["images"] == 64 and record["keras_precision"] == "float32" and record["passed"]
    assert json.loads((tmp_path / "shipped" / "model.onnx.parity.json").read_text()) == record
    described = json.loads((tmp_path / "shipped" / "model.onnx.classes.json").read_text())
    assert described["classes"] == run_metrics(run_copy)["data"]["classes"] and described["image_size"] == [32, 32]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_a_run_that_cannot_be_written_to_still_exports_elsewhere_but_not_into_itself(run_copy, tmp_path, monkeypatch):
    """A run on a read-only mount: its lock cannot be taken (simulated, as root may write anywhere). An export to
    another folder needs no lock and succeeds; one into the run (its export/ folder) is refused in one line."""
    from cnnlab.common.errors import CnnlabError
    from cnnlab.runs import rundir
    from cnnlab.serving.export import export_run

    def read_only(run_dir):
        raise CnnlabError(f"cannot write in {run_dir}: Read-only file system")

    monkeypatch.setattr(rundir, "locked", read_only)
    record = export_run(run_copy, "onnx", tmp_path / "elsewhere" / "model.onnx", parity_images=16)
    assert record["passed"] and (tmp_path / "elsewhere" / "model.onnx").is_file()
    with pytest.raises(CnnlabError, match="Read-only file system"):
        export_run(run_copy, "onnx", parity_images=16)
    assert not (run_copy / "export" / "model.onnx").exists()


def test_a_parity_failure_keeps_no_artifact_but_records_why(run_copy, tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main
    from cnnlab.serving import export

    monkeypatch.setitem(export.TOLERANCE, "float32", -1.0)  # no artifact can pass
    out = tmp_path / "shipped" / "model.onnx"
    assert main(["export", str(run_copy), *ONNX_ONLY, "--out", str(out)]) == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after the data's own notes
    assert last_line.startswith("cnnlab: error: parity check failed: max |difference|")
    assert "top-1 agreement" in last_line and last_line.endswith(f"{out} was not written")
    assert not (tmp_path / "shipped").exists()  # the folder the export made is gone with it
    assert not (run_copy / "export").exists() and not list(tmp_path.rglob("*.parity.json"))


def test_a_second_export_never_touches_the_first_ones_parity_record(run_copy, tmp_path):
    from cnnlab.serving.export import export_run

    first = export_run(run_copy, "onnx", tmp_path / "a.onnx", parity_images=8)
    export_run(run_copy, "onnx", tmp_path / "b.onnx", parity_images=16)
    assert json.loads((tmp_path / "a.onnx.parity.json").read_text()) == first
    assert json.loads((tmp_path / "b.onnx.parity.json").read_text())["images"] == 16


def refuse(arguments, *folders, code=1) -> str:
    """Run `cnnlab export ARGUMENTS` in this process; it must fail with `code`, one line, and change no file."""
    from cnnlab.cli import main

    before = files_under(*folders)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["export", *map(str, arguments)]) == code
    assert files_under(*folders) == before
    (line,) = stderr.getvalue().strip().splitlines()
    return line


@pytest.mark.parametrize("existing", ["model.onnx", "model.onnx.classes.json", "model.onnx.parity.json"])
def test_an_existing_output_is_never_overwritten(run_copy, tmp_path, existing):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / existing).write_bytes(b"keep me")
    assert f"{existing} already exists; cnnlab export never overwrites" in refuse(
        [run_copy, *ONNX_ONLY, "--out", shipped / "model.onnx"], run_copy, shipped)
    assert (shipped / existing).read_bytes() == b"keep me" and [path.name for path in shipped.iterdir()] == [existing]


def test_an_unfinished_run_an_unknown_format_and_a_wrong_suffix_are_refused(run_copy, tmp_path):
    (run_copy / "status.json").write_text(json.dumps({"state": "running", "reason": None}))
    assert "is not a finished run (status: running)" in refuse([run_copy, *ONNX_ONLY], run_copy)
    assert "invalid choice: 'tflite'" in refuse([run_copy, "--format", "tflite"], run_copy, code=2)
    (run_copy / "status.json").write_text(json.dumps({"state": "finished", "reason": None}))
    assert "should end in .tflite" in refuse([run_copy, "--format", "litert", "--out", tmp_path / "m.lite"], tmp_path)
    assert "at least 1" in refuse([run_copy, "--format", "onnx", "--parity-images", "0"], run_copy)


def test_a_missing_runtime_names_the_extra_to_install(run_copy, monkeypatch):
    from cnnlab.serving import export

    format = export.FORMATS["onnx"]
    monkeypatch.setitem(export.FORMATS, "onnx", format._replace(modules=(*format.modules, "no_such_runtime")))
    line = refuse([run_copy, *ONNX_ONLY], run_copy)
    assert line == ("cnnlab: error: onnx export needs no_such_runtime: install the export extra: "
                    "pip install -e '.[export]' in cnnlab's folder")


def test_the_float32_copy_of_a_bfloat16_model_computes_the_same_in_float32():
    import keras

    from cnnlab.backends import placement_for
    from cnnlab.config import load_config
    from cnnlab.models.factory import build_model
    from cnnlab.models.saving import compute_dtypes, float32_copy

    # VGG16 (weights none, tiny head): a nested model, whose inner layers must change precision too.
    config = load_config("seed", {"model": "vgg16", "vgg16.weights": "none", "vgg16.head_units": [8],
                                  "train.precision": "bfloat16"})
    model = build_model(config, 10, (32, 32, 3), placement_for(config))
    copy = float32_copy(model)
    assert "bfloat16" in compute_dtypes(model) and compute_dtypes(copy) == {"float32"}
    assert copy.layers[-1].activation is keras.activations.softmax
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    exact = copy.predict(images, verbose=0)
    assert np.abs(model.predict(images, verbose=0) - exact).max() < 5e-2  # bfloat16 rounding, no more


def test_the_fast_nets_exact_gelu_survives_onnx(tmp_path):
    """TensorFlow computes the exact GELU through erfc, which ONNX lacks; the ONNX export computes it through erf."""
    from cnnlab.backends import placement_for
    from cnnlab.config import load_config
    from cnnlab.models.factory import build_model
    from cnnlab.serving.export import load_artifact, write_artifact

    config = load_config("fast", {"fastnet.widths": [8, 16, 16], "train.precision": "float32"})
    assert config.fastnet.activation == "gelu"
    model = build_model(config, 10, (32, 32, 3), placement_for(config))
    write_artifact(model, "onnx", tmp_path / "model.onnx", {})
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    answered = load_artifact("onnx", tmp_path / "model.onnx")(images)
    assert np.abs(answered - model.predict(images, verbose=0)).max() < 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# every model kind, end to end in fresh processes

# Of conftest.KIND_RUNS; exports go to export/ in each run. The bfloat16 CNN (exported as float32) in the full tier.
# tf2onnx 1.16 cannot convert two backbones: ConvNeXt's grouped convolutions ("StatefulPartitionedCall is not
# supported"), and EfficientNetV2's normalisation constants become extra graph inputs; they export as SavedModel.
NOT_ONNX = ("convnexttiny", "efficientnetv2b0")
KINDS = [*kind_params(kind for kind in TINY_KINDS if kind not in NOT_ONNX),
         pytest.param("cnn-bfloat16", marks=pytest.mark.slow)]


def printed_parity(stdout: str) -> float:
    """The max |difference| `cnnlab export` printed."""
    return float(stdout.split("max |difference| ")[1].split()[0])


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_export_of_every_kind_answers_as_its_run(kind_runs, kind, tmp_path):
    """`cnnlab export` and `cnnlab predict` on the export, each in a fresh process; the run's own answers are
    computed here (tests/test_cli_every_model.py runs `predict` on the run in a fresh process)."""
    artifact = tmp_path / "export" / "model.onnx"
    done = run_cnnlab("export", kind_runs[kind], *ONNX_ONLY, "--out", artifact)
    assert done.returncode == 0, done.stderr
    difference, agreement = recomputed_parity(kind_runs[kind], "onnx", artifact, 64)
    assert printed_parity(done.stdout) == pytest.approx(difference, rel=0.01, abs=1e-9)
    assert f"top-1 agreement {agreement:.1%}" in done.stdout
    precision = "bfloat16" if kind == "cnn-bfloat16" else "float32"
    assert f"vs the Keras model ({precision})" in done.stdout
    images = write_test_images(kind_runs[kind], tmp_path, 3)
    on_run = answers_of_run(kind_runs[kind], images, k=3)
    on_onnx = run_cnnlab("predict", artifact, "--json", *images)
    assert on_onnx.returncode == 0, on_onnx.stderr
    assert len(on_run) == len(json.loads(on_onnx.stdout)) == 3
    for from_run, from_onnx in zip(on_run, json.loads(on_onnx.stdout)):
        assert from_onnx["top"][0]["class"] == from_run["top"][0]["class"]
        assert from_onnx["top"][0]["probability"] == pytest.approx(from_run["top"][0]["probability"], abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("kind", NOT_ONNX)
def test_a_model_tf2onnx_cannot_convert_is_refused_in_one_line_and_exports_as_savedmodel(kind_runs, kind, tmp_path):
    refused = run_cnnlab("export", kind_runs[kind], *ONNX_ONLY, "--out", tmp_path / "model.onnx")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "cnnlab: error: the onnx file converted from this model does not run in its runtime (")
    assert refused.stderr.strip().endswith("was not written; --format savedmodel or litert may work")
    assert not list(tmp_path.iterdir())
    artifact = tmp_path / "saved"
    done = run_cnnlab("export", kind_runs[kind], "--format", "savedmodel", "--parity-images", "64", "--out", artifact)
    assert done.returncode == 0, done.stderr
    difference, agreement = recomputed_parity(kind_runs[kind], "savedmodel", artifact, 64)
    assert printed_parity(done.stdout) == pytest.approx(difference, rel=0.01, abs=1e-9) and agreement == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("format", ["savedmodel", "litert"])
@pytest.mark.parametrize("kind", ["cnn-bfloat16", "fastnet"])  # bfloat16 made float32; the fast net's GELU
def test_savedmodel_and_litert_exports_answer_as_the_run(kind_runs, kind, format, tmp_path):
    from cnnlab.serving.export import FORMATS, TOLERANCE

    run_dir = copy_of(kind_runs[kind], tmp_path)  # the export goes where it goes by default: into the run
    done = run_cnnlab("export", run_dir, "--format", format, "--parity-images", "64")
    assert done.returncode == 0, done.stderr
    artifact = run_dir / "export" / FORMATS[format].file_name
    difference, agreement = recomputed_parity(run_dir, format, artifact, 64)
    assert printed_parity(done.stdout) == pytest.approx(difference, rel=0.01, abs=1e-9)
    record = json.loads((run_dir / "export" / f"{FORMATS[format].file_name}.parity.json").read_text())
    assert record["max_abs_difference"] == pytest.approx(difference, rel=1e-6, abs=1e-12)
    assert record["top1_agreement"] == agreement and record["passed"]
    assert record["tolerance"] == TOLERANCE[record["keras_precision"]]
    if kind == "cnn-bfloat16":
        assert record["keras_precision"] == "bfloat16"


def write_test_images(run_dir, folder, count):
    """The run's first test images as PNG files."""
    from cnnlab.runs.run import Run
    from cnnlab.serving.export import parity_sample

    paths = []
    for index, image in enumerate(parity_sample(Run.open_finished(run_dir), count)):
        paths.append(folder / f"test{index}.png")
        Image.fromarray(image.astype(np.uint8)).save(paths[-1])
    return paths


@pytest.mark.slow
def test_the_speed_benchmark_times_keras_and_each_artifact(trained_run):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "export_speed.py"
    done = subprocess.run([sys.executable, str(script), str(trained_run), "--formats", "onnx", "litert",
                           "--calls", "2", "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:]}
    assert list(rows) == ["keras", "onnx", "litert"]
    for single, batched, megabytes in rows.values():
        assert float(single.replace(",", "")) > 0 and float(batched.replace(",", "")) > 0
    assert float(rows["keras"][2]) == pytest.approx((trained_run / "model.keras").stat().st_size / 2**20, abs=0.01)
    assert 0 < float(rows["onnx"][2]) < 1  # the tiny CNN's 35k float32 weights
