import json
import re

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import JSON_VALUES

from cnnlab.errors import CnnlabError
from cnnlab.evaluate import metrics_from_probabilities, read_history, read_metrics


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


def valid_metrics() -> dict:
    classes = ["cat", "dog"]
    return {"data": {"classes": classes}, "per_class_accuracy": {"cat": 0.5, "dog": 1.0},
            "confusion_matrix": [[1, 1], [0, 2]], "test_accuracy": 0.75, "test_loss": 0.6, "train_seconds": 12.5,
            "parameters": 100, "trainable_parameters": 90, "epochs": 2, "seconds_per_epoch": 6.2,
            "phases": [{"name": "train", "seconds_per_epoch": 6.2}], "test_time_augmentation": 0,
            "label": "CNN from scratch", "preset": "seed", "hardware": {}, "versions": {}}


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.update(test_accuracy=float("nan")), "test_accuracy is not a number"),
    (lambda m: m.update(test_loss="0.5"), "test_loss is not a number"),
    (lambda m: m.update(epochs=2.0), "epochs is not a count"),
    (lambda m: m["data"].update(classes=["cat", "cat"]), "no list of distinct class names"),
    (lambda m: m.update(confusion_matrix=[[1, 1]]), "confusion matrix is not 2 x 2"),
    (lambda m: m.update(per_class_accuracy={"cat": 0.5}), "per_class_accuracy"),
    (lambda m: m.update(phases=[{"seconds_per_epoch": 1}]), "phases"),
    (lambda m: m.update(test_time_augmentation=7), "test_time_augmentation"),
    (lambda m: m.update(test_time_augmentation=True), "test_time_augmentation"),
    (lambda m: m.update(train_seconds=-1), "train_seconds is not a number of seconds"),
    (lambda m: m.update(hardware=[]), "hardware is not an object"),
])
def test_metrics_missing_or_of_the_wrong_kind_are_damage_named_in_one_line(tmp_path, change, problem):
    metrics = valid_metrics()
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert read_metrics(tmp_path / "metrics.json") == metrics
    change(metrics)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(CnnlabError, match=f"metrics.json is damaged \\(.*{re.escape(problem)}"):
        read_metrics(tmp_path / "metrics.json")


@given(key=st.sampled_from(sorted(valid_metrics())), value=JSON_VALUES, drop=st.booleans())
def test_any_metrics_file_is_read_whole_or_refused(tmp_path_factory, key, value, drop):
    metrics = valid_metrics()
    if drop:
        del metrics[key]
    else:
        metrics[key] = value
    path = tmp_path_factory.mktemp("run") / "metrics.json"
    path.write_text(json.dumps(metrics))
    try:
        loaded = read_metrics(path)
    except CnnlabError as exc:
        assert str(exc).startswith(f"{path} is damaged (")
        return
    # What later commands use is there, of the kind they use it as; the training summary, where present.
    assert 0 <= loaded["test_accuracy"] <= 1 and np.isfinite(loaded["test_loss"])
    assert set(loaded["per_class_accuracy"]) == set(loaded["data"]["classes"])
    assert loaded.get("test_time_augmentation", 0) in (0, 1, 2)
    assert all(type(loaded.get(name, 0)) is int for name in ("parameters", "trainable_parameters", "epochs"))
    assert all(isinstance(phase["name"], str) for phase in loaded.get("phases", []))


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_history_file_is_read_or_refused(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("run") / "history.csv"
    path.write_bytes(content)
    try:
        columns = read_history(path)
    except CnnlabError:
        return
    assert len({len(values) for values in columns.values()}) <= 1  # every column as long as the others
