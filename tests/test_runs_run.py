"""Run: the run directory as an object; opening one says what is wrong with a folder that is not what the command
needs, and reading its files goes through their checks."""

import re

import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.runs import rundir
from cnnlab.runs.run import Run


def test_open_finished_explains_what_is_wrong(tmp_path):
    with pytest.raises(CnnlabError, match="run directory not found"):
        Run.open_finished(tmp_path / "missing")
    with pytest.raises(CnnlabError, match="not a cnnlab run directory \\(no status.json or config.json\\)"):
        Run.open_finished(tmp_path)
    rundir.write_json(tmp_path / rundir.CONFIG, {})
    rundir.set_status(tmp_path, "failed", "training diverged")
    with pytest.raises(CnnlabError, match="not a finished run \\(status: failed: training diverged\\)"):
        Run.open_finished(tmp_path)
    rundir.set_status(tmp_path, "finished")
    with pytest.raises(CnnlabError, match="has no model.keras"):
        Run.open_finished(tmp_path)
    (tmp_path / rundir.MODEL).write_bytes(b"model")
    assert Run.open_finished(tmp_path).path == tmp_path
    assert Run.open_finished(tmp_path).finished_at()  # the time status.json records, for the report


def test_open_takes_a_run_in_any_state_but_not_another_folder(tmp_path):
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        Run.open(tmp_path)
    rundir.write_json(tmp_path / rundir.CONFIG, {})
    rundir.set_status(tmp_path, "running")
    assert Run.open(tmp_path).state() == "running"


@pytest.mark.parametrize("outputs", [6, pytest.param(12, marks=pytest.mark.slow)])  # 12: the same path, more classes
def test_a_model_that_answers_for_another_number_of_classes_is_refused_where_it_is_loaded(run_copy, outputs):
    """model.keras with 6 (or 12) outputs in a run of 10 classes: predict, export and serve would label its answers
    wrongly (or fail on an index); every command that loads the model refuses it in one line instead."""
    import keras

    from conftest import run_cnnlab

    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Dense(outputs, "softmax")(keras.layers.Flatten()(inputs)))
    other.save(run_copy / "model.keras")
    message = f"answers for {outputs} classes, but there are 10 class names (airplane, automobile, bird, ...)"
    with pytest.raises(CnnlabError, match=re.escape(message)):
        Run(run_copy).load_model(Run(run_copy).settings().class_names)
    image = run_copy / "any.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    for command in (["predict", run_copy, image], ["export", run_copy, "--format", "onnx", "--out", run_copy / "x.onnx"],
                    ["evaluate", run_copy], ["serve", run_copy, "--port", "0"]):
        done = run_cnnlab(*command, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (command, done.stderr)
        assert len(done.stderr.strip().splitlines()[-1:]) == 1 and "Traceback" not in done.stderr
    assert not (run_copy / "x.onnx").exists()


@pytest.mark.parametrize("name, content", [("metrics.json", "[" * 200_000), ("config.json", "[" * 200_000),
                                           ("metrics.json", None)])
def test_a_huge_or_deeply_nested_run_file_is_one_line_for_every_command_that_reads_it(run_copy, tmp_path, name,
                                                                                        content):
    """Were "unexpected error: RecursionError" in predict, report, export and evaluate, and 3 GB read for a sparse
    1.5 GB metrics.json."""
    from conftest import run_cnnlab

    path = run_copy / name
    if content is None:
        path.unlink()
        with open(path, "wb") as file:
            file.truncate(1_500_000_000)
    else:
        path.write_text(content)
    image = tmp_path / "any.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    for command in (["predict", run_copy, image], ["report", run_copy, "--out", tmp_path / "report"],
                    ["export", run_copy, "--format", "onnx", "--out", tmp_path / "x.onnx"]):
        done = run_cnnlab(*command)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and "unexpected error" not in done.stderr and "Traceback" not in done.stderr
        assert name in lines[-1] and ("nested too deeply" in lines[-1] or "over 64 MiB" in lines[-1]), lines
