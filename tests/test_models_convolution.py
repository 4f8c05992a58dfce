"""Convolutions whose gradients are forward convolutions (models/convolution.py): the same gradients as Keras's own
Conv2D on every backend, chosen where the placement says, and saved as Keras's own layer."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from cnnlab.config import load_config
from cnnlab.models import convolution
from cnnlab.models.factory import build_model
from cnnlab.models.portable import keras_copy
from cnnlab.models.registry import kind_of
from cnnlab.models.saving import portable_copy
from conftest import FLOAT32, TINY_DATA, TINY_KINDS, run_cnnlab, run_metrics

# Computes, on the backend KERAS_BACKEND names, the gradients of a loss through Keras's Conv2D and through the
# forward-convolution layer with the same weights, for each case in argv[1]; prints the largest relative difference.
GRADIENTS_ON_A_BACKEND = r"""
import json, sys
import numpy as np, keras
from cnnlab.config import load_config
from cnnlab.models import convolution
from cnnlab.models.factory import build_model

def gradients(layer, images):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        images = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=True)
            value = tf.reduce_sum(outputs * tf.sin(outputs))
        return [np.asarray(g) for g in tape.gradient(value, [images, layer.kernel, layer.bias])]
    if backend == "jax":
        import jax, jax.numpy as jnp
        def value(images, kernel, bias):
            # stateless_call hands `training` to call() as it is: Keras's Conv2D takes none
            training = {"training": True} if isinstance(layer, convolution.Conv2D) else {}
            outputs, _ = layer.stateless_call([kernel, bias], [], images, **training)
            return jnp.sum(outputs * jnp.sin(outputs))
        return [np.asarray(g) for g in jax.grad(value, argnums=(0, 1, 2))(images, layer.kernel.value, layer.bias.value)]
    import torch
    images = torch.tensor(images, requires_grad=True)
    outputs = layer(images, training=True)
    torch.sum(outputs * torch.sin(outputs)).backward()
    return [tensor.grad.cpu().numpy() for tensor in (images, layer.kernel.value, layer.bias.value)]

# Count the calls of the custom-gradient convolution: training must go through it, inference must not
calls = {"training": 0, "inference": 0}
through_convolutions = convolution.convolution_with_convolution_gradients
def counted(*arguments):
    calls[phase] += 1
    return through_convolutions(*arguments)
convolution.convolution_with_convolution_gradients = counted

worst = []
for shape, size, filters in json.loads(sys.argv[1]):
    images = np.random.default_rng(0).normal(size=shape).astype("float32")
    own = keras.layers.Conv2D(filters, size, padding="same")
    own.build(tuple(shape))
    with convolution.gradients_by_convolution(True):
        by_convolution = convolution.same_conv(filters, size)
    by_convolution.build(tuple(shape))
    by_convolution.set_weights(own.get_weights())
    assert type(by_convolution) is convolution.Conv2D
    phase = "training"
    pairs = list(zip(gradients(own, images), gradients(by_convolution, images)))
    pairs.append((keras.ops.convert_to_numpy(own(images)),
                  keras.ops.convert_to_numpy(by_convolution(images, training=True))))
    phase = "inference"  # the same outputs through Keras's own path
    pairs.append((keras.ops.convert_to_numpy(own(images)), keras.ops.convert_to_numpy(by_convolution(images))))
    worst.append(max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in pairs))
print(json.dumps({"worst": worst, "calls": calls}))
"""
# (images shape, kernel size, filters): non-square images, a batch of 1, 1x1, 3x3 and 5x5 kernels
CASES = [[[4, 9, 7, 3], 3, 5], [[1, 6, 6, 4], 5, 3], [[2, 5, 5, 2], 1, 2], [[3, 8, 8, 16], 3, 16]]


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_gradients_equal_keras_conv2d_on_each_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = subprocess.run([sys.executable, "-c", GRADIENTS_ON_A_BACKEND, json.dumps(CASES)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(measured["worst"]) == len(CASES)
    assert max(measured["worst"]) < 1e-5, measured  # float32 rounding, summed in another order
    assert measured["calls"] == {"training": 2 * len(CASES), "inference": 0}


def test_same_conv_makes_keras_conv2d_unless_asked():
    assert type(convolution.same_conv(4, 3)) is keras.layers.Conv2D
    with convolution.gradients_by_convolution(True):
        assert type(convolution.same_conv(4, 3)) is convolution.Conv2D
        with convolution.gradients_by_convolution(False):
            assert type(convolution.same_conv(4, 3)) is keras.layers.Conv2D
        assert type(convolution.same_conv(4, 3)) is convolution.Conv2D
    assert type(convolution.same_conv(4, 3)) is keras.layers.Conv2D


@pytest.mark.parametrize("options", [{"strides": 2}, {"dilation_rate": 2}, {"kernel_size": 2}])
def test_layer_refuses_convolutions_whose_gradients_differ(options):
    arguments = {"filters": 4, "kernel_size": 3, "padding": "same", **options}
    with pytest.raises(ValueError, match="gradients by convolution need"):
        convolution.Conv2D(**arguments)


def test_keras_copy_is_keras_conv2d_with_the_same_outputs(tmp_path):
    with convolution.gradients_by_convolution(True):
        inputs = keras.Input((8, 8, 3))
        model = keras.Model(inputs, convolution.same_conv(4, 3, name="conv")(inputs))
    copy = keras_copy(model)
    assert type(copy.get_layer("conv")) is keras.layers.Conv2D
    images = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(copy.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("kind", ["cnn", pytest.param("fastnet", marks=pytest.mark.slow),
                                  pytest.param("vgg16", marks=pytest.mark.slow)])
def test_a_run_trains_the_same_with_either_gradients_and_saves_keras_layers(kind, synthetic_archive, tmp_path):
    """`cnnlab train` with forward-convolution gradients and with the backend's own: the same losses, each choice
    recorded, and model.keras made of Keras's own Conv2D either way."""
    scores = {}
    for asked in ("convolutions", "backend"):
        run_dir = tmp_path / asked
        done = run_cnnlab("train", "--data", synthetic_archive, *TINY_DATA, *TINY_KINDS[kind], *FLOAT32,
                          "--set", f"train.convolution_gradients={asked}", "--out", run_dir)
        assert done.returncode == 0, done.stderr
        metrics = run_metrics(run_dir)
        assert metrics["convolution_gradients"].endswith(", as asked")
        scores[asked] = (metrics["test_loss"], metrics["test_accuracy"])
        with zipfile.ZipFile(run_dir / "model.keras") as archive:
            saved = archive.read("config.json").decode()
        assert '"class_name": "Conv2D"' in saved and "cnnlab>Conv2D" not in saved
    assert scores["convolutions"][0] == pytest.approx(scores["backend"][0], rel=1e-3)
    assert scores["convolutions"][1] == pytest.approx(scores["backend"][1], abs=0.01)


@pytest.mark.parametrize("kind, convolutions", [("cnn", 4), ("fastnet", 6)])
def test_build_model_makes_the_convolutions_the_placement_asks_for(kind, convolutions, tmp_path):
    models = {}
    for asked, expected in (("convolutions", convolution.Conv2D), ("backend", keras.layers.Conv2D)):
        config = load_config("seed", {"model": kind, "train.convolution_gradients": asked, "train.seed": len(models)})
        models[asked] = build_model(config, 10, (32, 32, 3))
        same = [layer for layer in models[asked].layers
                if isinstance(layer, keras.layers.Conv2D) and layer.padding == "same"]
        assert len(same) == convolutions and {type(layer) for layer in same} == {expected}
    assert type(convolution.same_conv(4, 3)) is keras.layers.Conv2D  # the switch closed with the build
    # Weights saved from either load into the other, as a run resumed where "auto" chooses otherwise needs
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    for source, target in (("convolutions", "backend"), ("backend", "convolutions")):
        models[source].save_weights(tmp_path / f"{source}.weights.h5")
        models[target].load_weights(tmp_path / f"{source}.weights.h5")
        np.testing.assert_allclose(models[target].predict(images, verbose=0),
                                   models[source].predict(images, verbose=0), rtol=1e-5, atol=1e-7)


def test_a_keras_built_backbone_gets_them_and_its_portable_copy_is_keras_layers_again():
    """VGG16 from keras.applications, to block 2: its four 3x3 convolutions swapped, with the same weights."""
    settings = {"model": "vgg16", "vgg16.weights": "none", "vgg16.top_block": 2}
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    models = {}
    for asked in ("convolutions", "backend"):
        config = load_config("seed", {**settings, "train.convolution_gradients": asked})
        models[asked] = build_model(config, 10, (32, 32, 3))
        trunk = models[asked].get_layer("trunk")
        swapped = [layer for layer in trunk.layers if isinstance(layer, convolution.Conv2D)]
        assert len(swapped) == (4 if asked == "convolutions" else 0)
    copy = portable_copy(models["convolutions"], kind_of(load_config("seed", settings)))
    assert not any(isinstance(layer, convolution.Conv2D) for layer in copy.get_layer("trunk").layers)
    np.testing.assert_allclose(copy.predict(images, verbose=0), models["convolutions"].predict(images, verbose=0),
                               rtol=1e-5, atol=1e-7)
