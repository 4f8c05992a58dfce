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
