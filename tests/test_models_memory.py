import dataclasses
import math

import pytest
from conftest import run_cnnlab
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.backends import placement_for
from cnnlab.common.errors import CnnlabError
from cnnlab.common.settings import MAX_LAYER_WIDTH, MAX_LAYERS
from cnnlab.config import OPTIMIZERS, available_presets, load_config
from cnnlab.models import KINDS
from cnnlab.models import memory
from cnnlab.models.factory import build_model
from cnnlab.models.memory import check_fits, estimate_training_memory, memory_limit
from cnnlab.models.recipe import compile_for_phase

CIFAR10 = {"num_classes": 10, "image_shape": (32, 32, 3)}
GIB = 2**30


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the tutorial's CNN
        {"cnn.conv_blocks": [[8], [16, 16], [8]], "cnn.dense_units": [], "cnn.conv_dropout": 0},
        {"cnn.conv_blocks": [[4, 4, 4]] * 5, "cnn.dense_units": [16, 8], "cnn.batch_norm": True, "cnn.dense_dropout": 0},
        {"model": "fastnet"},
        {"model": "fastnet", "fastnet.widths": [8, 16, 8, 4], "fastnet.whiten_patch": 3},
        {"model": "fastnet", "fastnet.widths": [5], "fastnet.whiten_patch": 1},
        {"model": "vgg16", "vgg16.weights": "none"},
        {"model": "vgg16", "vgg16.weights": "none", "vgg16.image_size": 48, "vgg16.head_pooling": "avg",
         "vgg16.head_units": []},
        {"model": "vgg16", "vgg16.weights": "none", "vgg16.image_size": 48, "vgg16.head_units": [32, 16]},
    ],
)
def test_estimate_counts_the_parameters_of_the_built_model(overrides):
    config = load_config("seed", overrides)
    estimate = estimate_training_memory(config, **CIFAR10)
    assert estimate.parameters == build_model(config, **CIFAR10).count_params()


def test_huge_layers_are_refused_with_the_numbers_before_anything_is_built():
    config = load_config("seed", {"cnn.dense_units": [1_000_000_000]})
    with pytest.raises(CnnlabError) as caught:
        check_fits(config, **CIFAR10)  # building this model would allocate 15 TiB of weights
    message = str(caught.value)
    assert message.startswith("config: the cnn model needs about 61,676.0 GiB for training (4.1e+12 parameters")
    assert "more than the" in message and "make the model or the batch smaller" in message and "\n" not in message


def test_a_model_too_large_to_save_and_read_back_is_refused_before_training():
    config = load_config("seed", {"cnn.dense_units": [200_000]})  # 0.8e9 parameters: fits in memory, 3.1 GiB saved
    with pytest.raises(CnnlabError, match=r"has 8.2e\+08 parameters, 3.1 GiB saved, over the 2 GiB a cnnlab model"):
        check_fits(config, **CIFAR10)


def test_the_shipped_presets_fit():
    assert {"seed", "quick", "transfer", "fast", "scratch"} <= set(available_presets())
    for preset in available_presets():
        check_fits(load_config(preset), **CIFAR10)


def test_memory_grows_with_the_batch_and_the_optimizer_state():
    seed = load_config("seed")
    base = estimate_training_memory(seed, **CIFAR10)
    double_batch = estimate_training_memory(load_config("seed", {"train.batch_size": 64}), **CIFAR10)
    sgd = estimate_training_memory(load_config("seed", {"train.optimizer": "sgd"}), **CIFAR10)
    bfloat16 = estimate_training_memory(load_config("seed", {"train.precision": "bfloat16"}), **CIFAR10)
    lookahead = estimate_training_memory(load_config("seed", {"train.lookahead_every": 5}), **CIFAR10)
    assert double_batch.activation_bytes == 2 * base.activation_bytes
    assert double_batch.weight_bytes == base.weight_bytes
    # float32 weights, gradients and state: Adam keeps two moments, SGD one momentum, lookahead one average.
    assert base.weight_bytes == base.parameters * 4 * 4
    assert sgd.weight_bytes == base.parameters * 4 * 3
    assert lookahead.weight_bytes == base.parameters * 4 * 5
    assert 2 * bfloat16.activation_bytes == base.activation_bytes


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_has_a_state_size(optimizer):
    """The estimate's optimizer state is the state Keras really creates for the recipe's optimizer (Adam: two
    moments per weight; SGD: one momentum), so a new optimizer cannot be added with a wrong or missing size."""
    config = load_config("seed", {"train.optimizer": optimizer})
    model = build_model(config, **CIFAR10)
    compile_for_phase(model, config, 0.001, 10, dataclasses.replace(placement_for(config), jit_compile=False))
    model.optimizer.build(model.trainable_variables)
    # The step counter and learning rate are scalars, not per-weight state.
    state = sum(math.prod(variable.shape) for variable in model.optimizer.variables if len(variable.shape))
    assert state in (model.count_params(), 2 * model.count_params())  # one or two slots of every weight
    weights_and_gradients = 2 * model.count_params()
    assert estimate_training_memory(config, **CIFAR10).weight_bytes == (weights_and_gradients + state) * 4


def test_memory_limit_is_physical_memory_or_a_lower_container_limit(tmp_path, monkeypatch):
    available, source = memory_limit()
    assert available > 2**28 and source in ("physical memory on this machine", "this container's memory limit")
    limit = tmp_path / "memory.max"
    limit.write_text(f"{GIB}\n")
    monkeypatch.setattr(memory, "CGROUP_LIMITS", (tmp_path / "absent", limit))
    assert memory_limit() == (GIB, "this container's memory limit")
    with pytest.raises(CnnlabError, match=r"more than the 1.0 GiB of this container's memory limit"):
        check_fits(load_config("seed", {"train.batch_size": 8192}), **CIFAR10)
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert memory_limit()[1] == "physical memory on this machine"


WIDTHS = st.integers(1, MAX_LAYER_WIDTH)


@given(
    model=st.sampled_from(list(KINDS)),
    conv_blocks=st.lists(st.lists(WIDTHS, min_size=1, max_size=MAX_LAYERS), min_size=1, max_size=5),
    dense_units=st.lists(WIDTHS, max_size=MAX_LAYERS),
    widths=st.lists(WIDTHS, min_size=1, max_size=4),
    image_size=st.integers(32, 1024),
    batch_size=st.integers(1, 65_536),
    precision=st.sampled_from(["auto", "float32", "bfloat16"]),
)
def test_fuzz_any_accepted_configuration_is_estimated_and_fits_or_is_refused(
    model, conv_blocks, dense_units, widths, image_size, batch_size, precision
):
    config = load_config("seed", {
        "model": model, "cnn.conv_blocks": conv_blocks, "cnn.dense_units": dense_units, "fastnet.widths": widths,
        "vgg16.image_size": image_size, "vgg16.head_units": dense_units, "train.batch_size": batch_size,
        "train.precision": precision,
    })
    assert estimate_training_memory(config, **CIFAR10).total_bytes > 0
    try:
        check_fits(config, **CIFAR10)
    except CnnlabError as exc:
        assert "\n" not in str(exc) and ("GiB for training" in str(exc) or "a cnnlab model file may hold" in str(exc))


# a fresh process imports TensorFlow and reads the archive: about 15 s, the one check of this refusal as users meet it
def test_cli_refuses_a_model_too_large_for_memory_in_one_line(tmp_path, synthetic_archive):
    out = tmp_path / "run"
    result = run_cnnlab("train", "--data", synthetic_archive, "--set", "cnn.dense_units=[1000000000]", "--out", out)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnlab")]  # not TensorFlow's log lines
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the cnn model needs about 61,676.0 GiB for training (4.1e+12 parameters, batch 32)" in errors[0]
    assert not out.exists()

