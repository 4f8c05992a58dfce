"""Every model kind at image sizes other than CIFAR-10's 32 px, and any class count: built, run, counted, refused."""

import numpy as np
import pytest
from PIL import Image
from conftest import run_cnnlab

from cnnlab.common.errors import CnnlabError
from cnnlab.config import load_config
from cnnlab.models import prepare_with_data
from cnnlab.models.factory import build_model
from cnnlab.models.memory import check_fits, estimate_training_memory

SIZES = (16, 24, 48, 64)
CLASS_COUNTS = (2, 3, 37)
TINY = {
    "cnn": load_config("seed", {"cnn.conv_blocks": [[4], [8]], "cnn.dense_units": [8], "train.precision": "float32"}),
    "fastnet": load_config("fast", {"fastnet.widths": [4, 8, 8], "train.precision": "float32"}),
    "vgg16": load_config("seed", {"model": "vgg16", "vgg16.weights": "none", "vgg16.head_units": [8],
                                  "train.precision": "float32"}),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", list(TINY))
def test_every_kind_classifies_images_of_any_size_into_any_number_of_classes(kind, size):
    config = TINY[kind]
    images = np.random.default_rng(size).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    for classes in CLASS_COUNTS:
        model = build_model(config, classes, image_shape=(size, size, 3))
        prepare_with_data(model, config, images)
        probabilities = np.asarray(model.predict(images, verbose=0))
        assert model.input_shape == (None, size, size, 3)
        assert probabilities.shape == (3, classes) and np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        # The memory check counts the same model without building it, at this size too.
        assert estimate_training_memory(config, classes, (size, size, 3)).parameters == model.count_params()


def test_the_cnn_grows_its_dense_layer_with_the_image_and_vgg16_does_not():
    # The CNN flattens its last map, so its first dense layer sees (size / 4)^2 x 8 values after two blocks;
    # VGG16 resizes every input to vgg16.image_size, so its size is the same whatever the images.
    cnn = [estimate_training_memory(TINY["cnn"], 2, (size, size, 3)).parameters for size in (16, 64)]
    assert cnn[1] - cnn[0] == (16 * 16 - 4 * 4) * 8 * 8
    vgg16 = {estimate_training_memory(TINY["vgg16"], 2, (size, size, 3)).parameters for size in SIZES}
    assert len(vgg16) == 1


@pytest.mark.parametrize("size, allowed", [(16, 4), (24, 4), (31, 4)])
def test_more_cnn_blocks_than_the_images_can_be_halved_are_refused_before_building(size, allowed):
    too_deep = load_config("seed", {"cnn.conv_blocks": [[4]] * (allowed + 1)})
    for check in (check_fits, build_model):
        with pytest.raises(CnnlabError) as caught:
            check(too_deep, 10, (size, size, 3))
        assert str(caught.value) == (f"config: cnn.conv_blocks has {allowed + 1} blocks; {size} px images allow at "
                                     f"most {allowed} (each block halves the image)")
    deepest = load_config("seed", {"cnn.conv_blocks": [[4]] * allowed, "cnn.dense_units": [4]})
    check_fits(deepest, 10, (size, size, 3))
    assert build_model(deepest, 10, (size, size, 3)).output_shape == (None, 10)


@pytest.mark.parametrize("size, patch, allowed", [(16, 2, 3), (16, 4, 3), (18, 4, 3), (15, 1, 3)])
def test_more_fastnet_groups_than_the_whitened_images_can_be_halved_are_refused(size, patch, allowed):
    # The whitening conv trims patch - 1 px: 16 px with 2x2 patches leaves 15, which halves 3 times.
    overrides = {"fastnet.widths": [4] * (allowed + 1), "fastnet.whiten_patch": patch}
    with pytest.raises(CnnlabError) as caught:
        check_fits(load_config("fast", overrides), 10, (size, size, 3))
    assert str(caught.value) == (f"config: fastnet.widths has {allowed + 1} groups; {size} px images allow at most "
                                 f"{allowed} with fastnet.whiten_patch {patch} (each group halves the image)")
    fits = load_config("fast", {**overrides, "fastnet.widths": [4] * allowed})
    check_fits(fits, 10, (size, size, 3))
    assert build_model(fits, 10, (size, size, 3)).output_shape == (None, 10)


def test_a_1px_whitening_patch_trims_nothing_so_16px_images_take_four_fastnet_groups():
    config = load_config("fast", {"fastnet.widths": [4] * 4, "fastnet.whiten_patch": 1})
    check_fits(config, 10, (16, 16, 3))
    assert build_model(config, 10, (16, 16, 3)).get_layer("group4_pool").output.shape == (None, 1, 1, 4)


def test_vgg16_takes_images_smaller_than_its_own_size():
    config = load_config("seed", {"model": "vgg16", "vgg16.weights": "none", "vgg16.image_size": 48})
    check_fits(config, 10, (16, 16, 3))  # upscaled to 48 inside the model: five poolings fit
    assert build_model(config, 10, (16, 16, 3)).get_layer("upscale").output.shape == (None, 48, 48, 3)


# a fresh process imports TensorFlow and decodes the folder: about 15 s, the one check of this refusal as users meet it
def test_cli_refuses_too_many_blocks_for_the_image_size_in_one_line(tmp_path):
    for index, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)] * 20):
        (tmp_path / "photos" / f"class{index % 3}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), colour).save(tmp_path / "photos" / f"class{index % 3}" / f"{index}.png")
    out = tmp_path / "run"
    result = run_cnnlab("train", "--data", tmp_path / "photos", "--image-size", "16",
                        "--set", "cnn.conv_blocks=[[4], [4], [4], [4], [4]]", "--out", out)
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnlab")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors == ["cnnlab: error: config: cnn.conv_blocks has 5 blocks; 16 px images allow at most 4 "
                      "(each block halves the image)"]
    assert not out.exists()
