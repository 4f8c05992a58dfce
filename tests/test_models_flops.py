"""FLOP counts: by hand on small models, and as every kind's finished run records them in metrics.json."""

import json

import keras
import numpy as np
import pytest

from cnnlab.models.flops import forward_flops, training_step_flops
from cnnlab.runs.run import load_run_model
from cnnlab.evaluation.scoring import TTA_VARIANTS
from conftest import DEFAULT_TIER_KINDS

CONV = 2 * 32 * 32 * (3 * 3 * 3 * 8)  # 3x3 from 3 to 8 channels at 32x32
DEPTHWISE = 2 * 16 * 16 * (3 * 3 * 8)  # at 16x16 after the pooling
DENSE = 2 * 8 * 10


def small_model(trunk_trains: bool = True) -> keras.Model:
    """A nested trunk (a convolution, a pooling) under a depthwise convolution and a dense head."""
    inputs = keras.Input((32, 32, 3))
    trunk_input = keras.Input((32, 32, 3))
    trunk = keras.Model(trunk_input, keras.layers.MaxPooling2D()(keras.layers.Conv2D(8, 3, padding="same")(
        trunk_input)), name="trunk")
    trunk.trainable = trunk_trains
    features = keras.layers.DepthwiseConv2D(3, padding="same")(trunk(inputs))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(features))
    return keras.Model(inputs, outputs)


def test_forward_flops_are_twice_the_multiply_adds_of_convolutions_and_dense_layers_nested_models_too():
    assert forward_flops(small_model()) == CONV + DEPTHWISE + DENSE


def test_a_training_step_adds_weight_gradients_where_layers_train_and_input_gradients_above_the_lowest():
    # All train: forward, weight gradients of all, input gradients of all but the first layer (nothing below it).
    assert training_step_flops(small_model()) == 3 * (CONV + DEPTHWISE + DENSE) - CONV
    # A frozen trunk: its forward pass only.
    assert training_step_flops(small_model(trunk_trains=False)) == CONV + 3 * (DEPTHWISE + DENSE) - DEPTHWISE


@pytest.mark.parametrize("kind", DEFAULT_TIER_KINDS)
def test_every_kinds_run_records_the_flops_it_spent(kind_runs, kind):
    run_dir = kind_runs[kind]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = load_run_model(run_dir)
    forward = forward_flops(model)
    test_images = int(np.sum(metrics["confusion_matrix"]))
    flops = metrics["flops"]
    assert flops["forward_per_image"] == forward > 0
    assert flops["test"] == forward * test_images * TTA_VARIANTS[metrics["test_time_augmentation"]]
    assert flops["train"] == sum(phase["train_flops"] for phase in metrics["phases"])
    every_layer_trains = 3 * forward * metrics["train_images"] * metrics["epochs"]
    if len(metrics["phases"]) == 1 and not metrics["phases"][0]["feature_cache_seconds"]:  # trained from scratch
        model.trainable = True
        assert flops["train"] == training_step_flops(model) * metrics["train_images"] * metrics["epochs"]
        assert flops["validation"] == forward * metrics["val_images"] * metrics["epochs"]
    else:  # a frozen trunk's features computed once, the layers above trained on them: less than all layers train
        assert 0 < flops["train"] < every_layer_trains and 0 < flops["validation"]
