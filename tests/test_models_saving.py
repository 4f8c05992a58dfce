"""Saved models load in any process: the portable copy, loading of older files, and damaged or oversized files."""

import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from cnnlab.backends import placement_for
from cnnlab.common.errors import CnnlabError
from cnnlab.config import RunConfig, load_config
from cnnlab.models import kind_of, prepare_with_data
from cnnlab.models.factory import build_model
from cnnlab.models.fastnet.network import ScaledBias
from cnnlab.models.recipe import compile_for_phase
from cnnlab.models.saving import MAX_MODEL_BYTES, load_model, portable_copy

IMAGES = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")


def small(model_kind: str) -> RunConfig:
    """A small float32 model of each kind (float32 so that copies can be compared closely)."""
    overrides = {"model": model_kind, "train.precision": "float32", "fastnet.widths": [8, 16, 16],
                 "cnn.conv_blocks": [[8], [16]], "cnn.dense_units": [16], "vgg16.weights": "none",
                 "vgg16.head_units": [8]}
    return load_config("fast" if model_kind == "fastnet" else "seed", overrides)


def trained_like(config: RunConfig) -> keras.Model:
    """A built model whose every weight (shifts, BatchNorm statistics) is off its initial value, as after training."""
    model = build_model(config, 10, (32, 32, 3))
    prepare_with_data(model, config, IMAGES)
    rng = np.random.default_rng(1)
    for variable in model.weights:
        values = np.asarray(variable.numpy())
        noise = rng.normal(0, 0.05, values.shape)
        variable.assign(np.abs(values + noise) if "variance" in variable.path else values + noise)
    return model


def plain_keras_predictions(path) -> np.ndarray:
    """Probabilities from `path` loaded in a fresh process that imports keras and numpy only, never cnnlab."""
    script = (
        "import sys, keras, numpy as np\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "assert not [name for name in sys.modules if name.startswith('cnnlab')]\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    folder = os.path.dirname(path)
    np.save(os.path.join(folder, "images.npy"), IMAGES)
    done = subprocess.run([sys.executable, "-c", script, str(path), os.path.join(folder, "images.npy"),
                           os.path.join(folder, "out.npy")], capture_output=True, text=True, cwd=folder,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    return np.load(os.path.join(folder, "out.npy"))


@pytest.mark.parametrize("kind", ["cnn", "fastnet", "vgg16"])
def test_portable_copy_computes_the_same_and_loads_without_cnnlab(kind, tmp_path):
    config = small(kind)
    model = trained_like(config)
    compile_for_phase(model, config, 0.1, 100, placement_for(config))  # as trained: an optimizer whose schedule may be cnnlab's own
    expected = model.predict(IMAGES, verbose=0)

    copy = portable_copy(model, kind_of(config))
    assert not any(isinstance(layer, ScaledBias) for layer in copy.layers)
    np.testing.assert_allclose(copy.predict(IMAGES, verbose=0), expected, atol=1e-5)
    copy.save(tmp_path / "model.keras")
    np.testing.assert_allclose(plain_keras_predictions(tmp_path / "model.keras"), expected, atol=1e-5)


def test_portable_copy_in_bfloat16_agrees_to_bfloat16_rounding():
    # Under mixed precision the folded BatchNorm adds its shift in float32 before rounding, the original in bfloat16.
    config = load_config("fast", {"train.precision": "bfloat16", "fastnet.widths": [8, 16, 16]})
    model = trained_like(config)
    expected = model.predict(IMAGES, verbose=0)
    copied = portable_copy(model, kind_of(config)).predict(IMAGES, verbose=0)
    np.testing.assert_allclose(copied, expected, atol=0.02)
    assert (copied.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.9


def test_a_zip_with_an_undecodable_member_name_is_one_clear_error(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", b"{}")
    raw = bytearray(path.read_bytes())
    for start in [i for i in range(len(raw)) if raw[i:i + 11] == b"config.json"]:
        raw[start:start + 2] = b"\xff\xfe"  # an invalid UTF-8 name...
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # ...in entries flagged as UTF-8
        at = raw.find(header)
        flag_offset = at + (6 if header == b"PK\x03\x04" else 8)
        raw[flag_offset + 1] |= 0x08  # bit 11 of the little-endian flags: the name is UTF-8
    path.write_bytes(bytes(raw))
    with pytest.raises(CnnlabError, match="cannot load .*model.keras"):
        load_model(path)


def test_models_saved_before_the_portable_format_still_load_in_a_fresh_process(tmp_path):
    config = small("fastnet")
    model = trained_like(config)
    compile_for_phase(model, config, 0.1, 100, placement_for(config))  # the WarmupLinear schedule goes into the file with the optimizer
    model.save(tmp_path / "old.keras")
    script = ("import sys, numpy as np\nfrom cnnlab.models.saving import load_model\n"
              "np.save(sys.argv[2], load_model(sys.argv[1]).predict(np.load(sys.argv[3]), verbose=0))")
    np.save(tmp_path / "images.npy", IMAGES)
    done = subprocess.run([sys.executable, "-c", script, tmp_path / "old.keras", tmp_path / "out.npy",
                           tmp_path / "images.npy"], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model.predict(IMAGES, verbose=0), atol=1e-5)


def test_a_model_file_claiming_huge_members_is_refused_before_unpacking(tmp_path):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{}")
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(bytes(2**20))  # 64 MiB of zeros deflate to about 64 KiB
    with pytest.raises(CnnlabError, match="inflates .* not a Keras model file"):
        load_model(bomb)


def test_a_model_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("cnnlab.models.saving.MAX_MODEL_BYTES", 1000)
    big = tmp_path / "big.keras"
    with zipfile.ZipFile(big, "w") as archive:
        archive.writestr("model.weights.h5", bytes(2000))
    with pytest.raises(CnnlabError, match="unpacks to 2,000 bytes, over the 1,000 limit"):
        load_model(big)
    assert MAX_MODEL_BYTES >= 2**30  # the real limit admits VGG16 at 224 px


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + bytes(40)])
def test_a_file_that_is_not_a_model_is_one_clear_error(tmp_path, content):
    (tmp_path / "model.keras").write_bytes(content)
    with pytest.raises(CnnlabError, match="cannot load .*model.keras"):
        load_model(tmp_path / "model.keras")


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/evil", "assets/../../up.txt"])
def test_a_model_file_with_members_outside_the_archive_is_one_line_not_four_warnings(tmp_path, member, recwarn):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", b"{}")
        archive.writestr(member, b"x")
    with pytest.raises(CnnlabError, match=r"points outside the archive; not a Keras model file"):
        load_model(path)
    assert not [warning for warning in recwarn if issubclass(warning.category, UserWarning)]
    assert not (tmp_path.parent / "escape.txt").exists()
