import keras
import numpy as np
import pytest

from cnnlab.config import load_config
from cnnlab.models import prepare_with_data
from cnnlab.models.factory import build_model
from cnnlab.models.fastnet.network import WHITEN_LAYER, ScaledBias, fit_input_layers

TINY_FAST = {"model": "fastnet", "fastnet.widths": [8, 16, 16], "train.precision": "float32"}


def tiny_fastnet(**overrides):
    config = load_config("fast", {**TINY_FAST, **overrides})
    return config, build_model(config, 10, (32, 32, 3))


def test_outputs_are_float32_probabilities_of_raw_pixels_in_either_precision():
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    for precision in ("float32", "bfloat16"):
        _, model = tiny_fastnet(**{"train.precision": precision})
        probabilities = model.predict(images, verbose=0)
        assert probabilities.shape == (4, 10) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert model.get_layer("group1_conv1").compute_dtype == precision


def test_convs_start_as_identity_on_their_first_channels():
    _, model = tiny_fastnet()
    kernel = model.get_layer("group2_conv1").kernel.numpy()  # 8 inputs -> 16 outputs
    for channel in range(8):
        expected = np.zeros((3, 3, 8))
        expected[1, 1, channel] = 1.0
        np.testing.assert_array_equal(kernel[:, :, :, channel], expected)
    assert np.abs(kernel[:, :, :, 8:]).sum() > 0  # the other filters keep their random start


def test_whitening_decorrelates_standardised_patches():
    rng = np.random.default_rng(1)
    # Strongly correlated channels and neighbouring pixels, far from zero mean and unit variance.
    base = rng.normal(120, 40, (300, 33, 33, 1))
    smooth = (base[:, 1:, 1:] + base[:, :-1, :-1]) / 2
    images = np.clip(np.concatenate([smooth, smooth * 0.8 + 20 + rng.normal(0, 30, smooth.shape), smooth * 0.5 + rng.normal(0, 30, smooth.shape)],
                                    axis=-1), 0, 255).astype("uint8")
    config, model = tiny_fastnet()
    prepare_with_data(model, config, images)
    whiten = model.get_layer(WHITEN_LAYER)
    outputs = keras.Model(model.input, whiten.output).predict(images, verbose=0).reshape(-1, whiten.filters)
    half = whiten.filters // 2
    covariance = np.cov(outputs[:, :half], rowvar=False)
    np.testing.assert_allclose(np.diag(covariance), 1.0, atol=0.1)  # the noisy directions are damped by epsilon
    off_diagonal = covariance - np.diag(np.diag(covariance))
    assert np.abs(off_diagonal).max() < 0.05
    np.testing.assert_allclose(outputs[:, half:], -outputs[:, :half], atol=1e-3)
    assert not whiten.trainable


def test_scaled_bias_moves_scale_squared_times_as_far():
    plain, scaled = ScaledBias(1.0), ScaledBias(8.0)
    moved = []
    for layer in (plain, scaled):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, layer(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        model.train_on_batch(np.zeros((4, 3)), np.ones((4, 3)))
        moved.append(layer.stored.numpy() * layer.scale)
    np.testing.assert_allclose(moved[1], 64 * moved[0], rtol=1e-5)
    assert np.all(moved[0] > 0)


def test_save_load_round_trip_keeps_the_fitted_layers(tmp_path):
    config, model = tiny_fastnet()
    images = np.random.default_rng(2).integers(0, 256, (50, 32, 32, 3)).astype("uint8")
    fit_input_layers(model, images)
    model.save(tmp_path / "fast.keras")
    loaded = keras.saving.load_model(tmp_path / "fast.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images[:4], verbose=0), model.predict(images[:4], verbose=0), rtol=1e-5)


def test_same_seed_same_net_other_seed_other_net():
    first, second = tiny_fastnet()[1], tiny_fastnet()[1]
    other = tiny_fastnet(**{"train.seed": 1})[1]
    kernel = lambda model: model.get_layer("group2_conv1").kernel.numpy()  # half random, half identity
    np.testing.assert_array_equal(kernel(first), kernel(second))
    assert not np.array_equal(kernel(first), kernel(other))


@pytest.mark.parametrize("widths", [[], [8, 8, 8, 8, 8]])
def test_depth_is_bounded_by_the_image_size(widths):
    from cnnlab.common.errors import CnnlabError

    with pytest.raises(CnnlabError, match="widths"):
        load_config("fast", {"fastnet.widths": widths})


def test_activation_is_chosen_by_the_config():
    for activation in ("gelu", "relu"):
        _, model = tiny_fastnet(**{"fastnet.activation": activation})
        activations = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
        used = {layer.get_config()["activation"] for layer in activations}
        assert used == {activation, "softmax"}
