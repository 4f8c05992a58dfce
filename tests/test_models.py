import dataclasses

import keras
import numpy as np
import pytest

from conftest import TINY_KINDS
from cnnlab.backends import placement_for
from cnnlab.config import MODEL_NAMES, load_config
from cnnlab.models import KINDS, compared_kinds, kind_of
from cnnlab.models.factory import ModelFactory, build_model


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_seed_cnn_is_the_tutorial_model():
    model = build_model(load_config("seed"), num_classes=10, image_shape=(32, 32, 3))
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [32, 32, 64, 64]
    assert layer_types(model).count("MaxPooling2D") == 2 and "BatchNormalization" not in layer_types(model)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [512, 10]
    assert model.count_params() == 2_168_362


def test_widths_depth_and_batch_norm_come_from_config():
    config = load_config("seed", {"cnn.conv_blocks": [[8], [8, 8], [16]], "cnn.batch_norm": True,
                                  "cnn.dense_units": [20, 30], "cnn.conv_dropout": 0.0})
    model = build_model(config, num_classes=4, image_shape=(32, 32, 3))
    types = layer_types(model)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 4
    assert types.count("BatchNormalization") == 4 and types.count("MaxPooling2D") == 3
    assert "Dropout" in types  # the dense dropout
    assert not any(name.startswith("block") and name.endswith("dropout") for name in (l.name for l in model.layers))
    assert model.output_shape == (None, 4)


def test_outputs_are_probabilities_of_raw_pixel_input():
    model = build_model(load_config("seed", {"cnn.conv_blocks": [[4]], "cnn.dense_units": [8]}), 10, (32, 32, 3))
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probabilities = np.asarray(model.predict(images, verbose=0))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Scaling is inside the model: uint8 and float 0-255 inputs give the same answer.
    np.testing.assert_allclose(model.predict(images.astype("float32"), verbose=0), probabilities, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = build_model(load_config("seed", {"cnn.conv_blocks": [[4], [8]], "cnn.batch_norm": True}), 10, (32, 32, 3))
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # plain Keras, no cnnlab objects needed
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5)


def test_the_registry_knows_every_model_a_config_can_name():
    assert set(KINDS) == set(MODEL_NAMES) and set(compared_kinds()) <= set(KINDS)
    for name, kind in KINDS.items():
        config = load_config("seed", {"model": name, **({f"{name}.weights": "none"} if kind.backbone else {})})
        assert kind_of(config) is kind and kind.label(config)
        assert [phase.epochs for phase in kind.phases(config)][0] == config.train.epochs


def test_every_kind_has_its_tiny_run_and_its_settings_section():
    """A new kind's end-to-end tests come from conftest.TINY_KINDS, its settings from its own declaration."""
    assert set(TINY_KINDS) == set(KINDS)
    for name, kind in KINDS.items():
        assert isinstance(getattr(load_config("seed"), name), kind.settings)  # config's section is the kind's own
    vgg = load_config("seed", {"model": "vgg16", "vgg16.weights": "none"})
    assert [phase.name for phase in kind_of(vgg).phases(vgg)] == ["head", "finetune"]
    assert kind_of(vgg).weights(vgg) == "none" and "random weights" in kind_of(vgg).caveat(vgg)
    cnn = load_config("seed")
    assert kind_of(cnn).weights(cnn) is None and kind_of(cnn).caveat(cnn) is None


@pytest.mark.parametrize("precision, policy", [("float32", "float32"), ("bfloat16", "mixed_bfloat16"),
                                               ("float16", "mixed_float16")])
def test_models_are_built_in_the_placements_precision(precision, policy):
    config = load_config("seed", {"cnn.conv_blocks": [[4]], "cnn.dense_units": [8]})
    factory = ModelFactory(config, dataclasses.replace(placement_for(config), precision=precision))
    model = factory.build(10, (32, 32, 3))
    assert model.get_layer("block1_conv1").dtype_policy.name == policy
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is left as it was
    factory.compile(model, 0.01, 10)
    # float16 gradients underflow without loss scaling, which Keras's compile adds for a mixed_float16 model
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "float16")
