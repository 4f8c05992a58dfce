"""The TensorFlow-only part of cnnlab: a tf.data pipeline that feeds training batches ahead of the model.

Everything else in cnnlab runs on any Keras backend; on JAX or PyTorch, `fit` reads the same batches through Keras's
PyDataset instead (see `backends.fit_input`).
"""

from __future__ import annotations

import tensorflow as tf


def prefetched_batches(batches) -> tf.data.Dataset:
    """One epoch of a `batches.ShuffledBatches` (its current epoch, read as each batch is made), each batch made while
    the model trains on the one before.

    Batches are made by the same NumPy code, one at a time and in order, so the data and its order are exactly those
    of the PyDataset; only the waiting goes. Keras starts a new pass over the dataset each epoch, after the epoch-end
    callbacks, one of which must move `batches` on to the next epoch.
    """
    image_shape = (None, *batches.x.shape[1:])
    label_shape = (None, batches.num_classes)
    dataset = tf.data.Dataset.range(len(batches)).map(
        lambda index: tf.numpy_function(lambda i: batches[int(i)], [index],
                                        [tf.as_dtype(batches.x.dtype), tf.float32], stateful=True),
        num_parallel_calls=None,  # one at a time, in order
    )
    dataset = dataset.map(lambda images, labels: (tf.ensure_shape(images, image_shape),
                                                  tf.ensure_shape(labels, label_shape)))
    return dataset.prefetch(tf.data.AUTOTUNE)
