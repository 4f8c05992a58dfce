import numpy as np
import pytest

from cnnlab.backends import fit_input
from cnnlab.data.augment import Augmentation
from cnnlab.data.batches import ShuffledBatches
from conftest import learnable_splits

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(__import__("keras").backend.backend() != "tensorflow",
                                reason="the tf.data pipeline serves the TensorFlow backend only")


def test_pipeline_serves_the_pydatasets_batches_epoch_after_epoch():
    splits = learnable_splits(train=70)
    augmentation = Augmentation(splits.x_train, seed=4, flip=True, translate=2)
    make = lambda: ShuffledBatches(splits.x_train, splits.y_train, 10, 32, seed=4, epoch=3, augmentation=augmentation)
    from cnnlab.backends.tensorflow import prefetched_batches

    batches = make()
    dataset = prefetched_batches(batches)
    served = list(dataset.as_numpy_iterator())
    batches.on_epoch_end()  # what fit_input's callback does at each epoch end
    served += list(dataset.as_numpy_iterator())
    reference = make()
    expected = []
    for _ in range(2):
        expected += [reference[index] for index in range(len(reference))]
        reference.on_epoch_end()
    assert len(served) == len(expected) == 6 and served[2][0].shape == (6, 32, 32, 3)
    for (images, labels), (want_images, want_labels) in zip(served, expected):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
    assert not np.array_equal(served[0][0], served[3][0])  # the second epoch is a new order


def test_fit_input_on_tensorflow_is_the_pipeline_and_moves_the_epoch_on():
    splits = learnable_splits(train=70)
    batches = ShuffledBatches(splits.x_train, splits.y_train, 10, 32, seed=0)
    data, callbacks = fit_input(batches)
    assert isinstance(data, tf.data.Dataset)
    for callback in callbacks:
        callback.on_epoch_end(0)
    assert batches.epoch == 1


def test_fit_reads_each_epochs_own_batches_in_order():
    import keras

    class Recorded(ShuffledBatches):
        def batch(self, epoch, index):
            loaded.append((epoch, index))
            return super().batch(epoch, index)

    loaded = []
    splits = learnable_splits(train=70)
    batches = Recorded(splits.x_train, splits.y_train, 10, 32, seed=0, epoch=2)  # as a resumed run starts
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", steps_per_execution=2)
    data, callbacks = fit_input(batches)
    model.fit(data, initial_epoch=2, epochs=5, shuffle=False, callbacks=callbacks, verbose=0)
    assert loaded == [(epoch, index) for epoch in (2, 3, 4) for index in range(3)]


def test_pipeline_runs_without_tf_data_autotuning():
    """Autotuning's thread made the end of each epoch's iterator wait 20-40 s with the GIL held (benchmarks/RESULTS.md,
    whole epochs): the pipeline keeps a fixed buffer instead."""
    from cnnlab.backends.tensorflow import PREFETCH_BATCHES, prefetched_batches

    splits = learnable_splits(train=70)
    dataset = prefetched_batches(ShuffledBatches(splits.x_train, splits.y_train, 10, 32, seed=0))
    assert dataset.options().autotune.enabled is False
    assert PREFETCH_BATCHES >= 2  # still one batch made while the model trains on another


def test_fused_adam_steps_as_keras_adam_and_stays_an_adam():
    """Three steps from the same weights with the same gradients, through Keras's Adam and through the fused kernel
    (a learning-rate schedule, as the recipes have): the same weights and moments; the optimizer saves as an Adam."""
    import keras

    from cnnlab.backends.tensorflow import ENGINE

    rng = np.random.default_rng(5)
    start = [rng.normal(size=shape).astype("float32") for shape in ((3, 3, 2, 4), (4,), (37, 5))]
    gradients = [[rng.normal(size=weight.shape).astype("float32") for weight in start] for _ in range(3)]
    results = []
    for fuse in (False, True):
        schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=1, decay_rate=0.5)
        optimizer = keras.optimizers.Adam(schedule, beta_1=0.8, epsilon=1e-3)
        optimizer = ENGINE.fused(optimizer) if fuse else optimizer
        weights = [keras.Variable(weight) for weight in start]
        step = tf.function(lambda grads: optimizer.apply(grads, weights))
        for grads in gradients:
            step([tf.constant(grad) for grad in grads])
        results.append([w.numpy() for w in weights + optimizer._momentums + optimizer._velocities])
        assert type(optimizer) is keras.optimizers.Adam
        assert keras.saving.serialize_keras_object(optimizer)["class_name"] == "Adam"
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-5, atol=1e-7)
    assert not np.allclose(results[1][0], start[0])  # the steps moved the weights


@pytest.mark.parametrize("where", ["bfloat16 weights", "a distribution strategy"])
def test_fused_adam_keeps_keras_step_where_the_kernel_does_not_fit(where):
    """Weights that are not float32, and a strategy's per-device variables, get Keras's own step: the same weights
    and moments as an unfused Adam's (the fused kernel would refuse the first and miss the second)."""
    import keras

    from cnnlab.backends.tensorflow import ENGINE

    dtype = "bfloat16" if where == "bfloat16 weights" else "float32"
    rng = np.random.default_rng(6)
    start = [rng.normal(size=shape).astype("float32") for shape in ((3, 3, 2, 4), (4,))]
    gradients = [[tf.constant(rng.normal(size=weight.shape), dtype) for weight in start] for _ in range(2)]
    results = []
    for fuse in (False, True):
        # the default strategy is none: `has_strategy()` is false under it
        strategy = tf.distribute.get_strategy() if dtype == "bfloat16" else tf.distribute.OneDeviceStrategy("/cpu:0")
        with strategy.scope():
            optimizer = keras.optimizers.Adam(0.01)
            optimizer = ENGINE.fused(optimizer) if fuse else optimizer
            weights = [keras.Variable(weight, dtype=dtype) for weight in start]
            optimizer.build(weights)
            for grads in gradients:
                strategy.run(optimizer.apply, args=(grads, weights))
        results.append([np.asarray(w.numpy(), "float32") for w in weights + optimizer._momentums])
    for keras_value, fused_value in zip(*results):
        np.testing.assert_array_equal(fused_value, keras_value)
    assert not np.allclose(results[1][0], start[0])


def test_only_plain_adam_is_fused():
    import keras

    from cnnlab.backends.tensorflow import ENGINE

    for optimizer in (keras.optimizers.Adam(amsgrad=True), keras.optimizers.SGD(), keras.optimizers.AdamW()):
        assert "update_step" not in vars(ENGINE.fused(optimizer))
    assert "update_step" in vars(ENGINE.fused(keras.optimizers.Adam()))
