import keras
import numpy as np

from cnnlab.evaluate import metrics_from_probabilities, read_history


def test_metrics_from_probabilities():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    labels = np.array([0, 1, 1, 2])
    metrics = metrics_from_probabilities(probabilities, labels, ("a", "b", "c"))
    assert metrics["test_accuracy"] == 0.75
    assert metrics["per_class_accuracy"] == {"a": 1.0, "b": 0.5, "c": 1.0}
    assert metrics["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    expected_loss = float(keras.losses.CategoricalCrossentropy()(np.eye(3)[labels], probabilities))
    assert abs(metrics["test_loss"] - expected_loss) < 1e-6


def test_class_without_test_images_scores_zero_not_nan():
    metrics = metrics_from_probabilities(np.array([[0.9, 0.1]]), np.array([0]), ("a", "b"))
    assert metrics["per_class_accuracy"] == {"a": 1.0, "b": 0.0}


def test_read_history(tmp_path):
    csv_file = tmp_path / "history.csv"
    csv_file.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.5,0.4,1.6\n1,0.6,1.2,0.5,1.4\n")
    history = read_history(csv_file)
    assert history["epoch"] == [0, 1] and history["val_loss"] == [1.6, 1.4]


def mirror_sensitive_model():
    """Class 0 for bright left halves, class 1 for bright right halves."""
    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    weights = np.zeros((16, 2))
    weights.reshape(4, 4, 2)[:, :2, 0] = 1.0
    weights.reshape(4, 4, 2)[:, 2:, 1] = 1.0
    dense = keras.layers.Dense(2, activation="softmax", use_bias=False)
    model = keras.Model(inputs, dense(flat))
    dense.set_weights([weights])
    return model


def test_test_time_augmentation_blends_the_mirror_and_shifted_images():
    from cnnlab.evaluate import predict_probabilities

    model = mirror_sensitive_model()
    images = np.zeros((2, 4, 4, 1), dtype="float32")
    images[0, :, 0] = 1.0  # bright left column
    images[1, :, 1] = 1.0
    plain = predict_probabilities(model, images)
    np.testing.assert_allclose(plain, model.predict(images, verbose=0), rtol=1e-6)
    assert plain[0].argmax() == 0
    # The model answers a mirror image the opposite way: blended with it, it can no longer tell.
    mirrored = predict_probabilities(model, images, augmentation=1)
    np.testing.assert_allclose(mirrored, 0.5, atol=1e-6)
    # Level 2 with a model that depends on position in no symmetric way, so each shift changes the answer.
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(seed=1))
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    images = np.random.default_rng(0).random((2, 4, 4, 1)).astype("float32") * 3
    shifted = predict_probabilities(model, images, augmentation=2)
    np.testing.assert_allclose(shifted.sum(axis=1), 1.0)
    log = lambda p: np.log(np.clip(p, 1e-7, 1))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    parts = [images, padded[:, :4, :4], padded[:, 2:6, 2:6]]
    blends = [0.5 * (log(model.predict(p, verbose=0)) + log(model.predict(p[:, :, ::-1], verbose=0))) for p in parts]
    expected = np.exp(0.5 * blends[0] + 0.25 * blends[1] + 0.25 * blends[2])
    np.testing.assert_allclose(shifted, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5)
    mirror_only = np.exp(blends[0]) / np.exp(blends[0]).sum(axis=1, keepdims=True)
    assert np.abs(shifted - mirror_only).max() > 1e-3  # the shifts do count


def test_history_without_validation_reads_keras_na_cells_as_nan(tmp_path):
    csv_file = tmp_path / "history.csv"
    csv_file.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.5,NA,NA\n")
    history = read_history(csv_file)
    assert history["accuracy"] == [0.5] and np.isnan(history["val_accuracy"][0])
