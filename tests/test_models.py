import keras
import numpy as np

from cnnlab.config import load_config
from cnnlab.models import build_model


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_seed_cnn_is_the_tutorial_model():
    model = build_model(load_config("seed"), num_classes=10)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [32, 32, 64, 64]
    assert layer_types(model).count("MaxPooling2D") == 2 and "BatchNormalization" not in layer_types(model)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [512, 10]
    assert model.count_params() == 2_168_362


def test_widths_depth_and_batch_norm_come_from_config():
    config = load_config("seed", {"cnn.conv_blocks": [[8], [8, 8], [16]], "cnn.batch_norm": True,
                                  "cnn.dense_units": [20, 30], "cnn.conv_dropout": 0.0})
    model = build_model(config, num_classes=4)
    types = layer_types(model)
    assert types.count("Conv2D") == 4 and types.count("BatchNormalization") == 4 and types.count("MaxPooling2D") == 3
    assert "Dropout" in types  # the dense dropout
    assert not any(name.startswith("block") and name.endswith("dropout") for name in (l.name for l in model.layers))
    assert model.output_shape == (None, 4)


def test_outputs_are_probabilities_of_raw_pixel_input():
    model = build_model(load_config("seed", {"cnn.conv_blocks": [[4]], "cnn.dense_units": [8]}), 10)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probabilities = np.asarray(model.predict(images, verbose=0))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Scaling is inside the model: uint8 and float 0-255 inputs give the same answer.
    np.testing.assert_allclose(model.predict(images.astype("float32"), verbose=0), probabilities, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = build_model(load_config("seed", {"cnn.conv_blocks": [[4], [8]], "cnn.batch_norm": True}), 10)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # plain Keras, no cnnlab objects needed
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5)
