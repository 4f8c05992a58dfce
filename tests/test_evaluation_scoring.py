import json
import re

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import JSON_VALUES

from cnnlab.common.errors import CnnlabError
from cnnlab.evaluation.corruptions import CORRUPTIONS, FAMILIES, corrupt
from cnnlab.evaluation.scoring import (corruption_sample, format_corruptions, metrics_from_probabilities,
                             score_corruptions)
from cnnlab.runs.history import read_history
from cnnlab.runs.metrics import read_metrics


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
    from cnnlab.evaluation.scoring import predict_probabilities

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
            "label": "CNN from scratch", "preset": "seed", "hardware": {}, "versions": {},
            "corruptions": valid_corruptions()}


def valid_corruptions() -> dict:
    return {"seed": 0, "images": 40, "clean_accuracy": 0.9,
            "accuracy": dict.fromkeys(CORRUPTIONS, [0.9, 0.8, 0.7, 0.6, 0.5]), "mean_accuracy": 0.7,
            "families": dict.fromkeys(FAMILIES, 0.7), "images_sha256": "0f" * 32, "seconds": 3.5}


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
    (lambda m: m.update(flops="a lot"), "flops are not numbers of FLOPs"),
    (lambda m: m.update(flops={"train": -1.0}), "flops are not numbers of FLOPs"),
    (lambda m: m.update(corruptions=[]), "corruptions is not an object"),
    (lambda m: m["corruptions"].update(seed=-1), "corruptions.seed is not a seed"),
    (lambda m: m["corruptions"].update(images=0), "corruptions.images is not a count"),
    (lambda m: m["corruptions"].update(clean_accuracy=float("nan")), "corruptions.clean_accuracy is not an accuracy"),
    (lambda m: m["corruptions"].update(mean_accuracy=1.5), "corruptions.mean_accuracy is not an accuracy"),
    (lambda m: m["corruptions"]["accuracy"].update(fog=[0.5] * 4), "corruptions.accuracy is not 5 accuracies"),
    (lambda m: m["corruptions"]["accuracy"].update(fog=[0.5, 0.5, 0.5, 0.5, "0.5"]), "corruptions.accuracy"),
    (lambda m: m["corruptions"]["accuracy"].pop("fog"), "for each of the 15 corruptions"),
    (lambda m: m["corruptions"]["accuracy"].update(speckle_noise=[0.5] * 5), "corruptions.accuracy"),
    (lambda m: m["corruptions"]["families"].pop("noise"), "corruptions.families is not an accuracy for each family"),
    (lambda m: m["corruptions"].update(images_sha256="abc"), "corruptions.images_sha256 is not a SHA-256"),
    (lambda m: m["corruptions"].pop("seconds"), "corruptions.seconds is not a number of seconds"),
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
    if "corruptions" in loaded:
        record = loaded["corruptions"]
        assert set(record["accuracy"]) == set(CORRUPTIONS) and all(len(row) == 5 for row in record["accuracy"].values())
        assert 0 <= record["mean_accuracy"] <= 1 and set(record["families"]) == set(FAMILIES)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_history_file_is_read_or_refused(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("run") / "history.csv"
    path.write_bytes(content)
    try:
        columns = read_history(path)
    except CnnlabError:
        return
    assert len({len(values) for values in columns.values()}) <= 1  # every column as long as the others


class RednessModel:
    """Class 1 when an image's mean red exceeds its mean blue: a stand-in with Keras's `predict` and `predict_on_batch`, blind to where
    things are, that counts the images it is shown."""

    def __init__(self):
        self.seen = 0

    def predict(self, images, batch_size=None, verbose=0):
        self.seen += len(images)
        margin = images[..., 0].mean(axis=(1, 2)) - images[..., 2].mean(axis=(1, 2)).astype(float)
        red = 1 / (1 + np.exp(-margin / 10))
        return np.stack([1 - red, red], axis=1)

    def predict_on_batch(self, images):
        return self.predict(images)


def red_and_blue(count=20, side=12):
    """Images a little redder than blue (class 1) or a little bluer than red (class 0)."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 2
    margin = np.where(labels == 1, 1, -1) * rng.integers(4, 30, count)
    images = np.zeros((count, side, side, 3), dtype=np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = (130 + margin)[:, None, None], 100, 130
    return np.clip(images + rng.integers(0, 20, images.shape), 0, 255).astype(np.uint8), labels


def test_score_corruptions_scores_the_model_on_every_corruption_and_severity_with_the_seed():
    import hashlib

    model = RednessModel()
    images, labels = red_and_blue()
    lines = []
    record = score_corruptions(model, images, labels, seed=3, log=lines.append)
    assert (record["seed"], record["images"], record["clean_accuracy"]) == (3, 20, 1.0)
    assert list(record["accuracy"]) == list(CORRUPTIONS)
    for name in ("contrast", "frost"):  # recomputed: the same images, the same model
        expected = [float((model.predict(corrupt(images, name, severity, 3)).argmax(axis=1)
                           == labels).mean()) for severity in range(1, 6)]
        assert record["accuracy"][name] == expected
    every = [value for row in record["accuracy"].values() for value in row]
    assert len(every) == 75 and min(every) < 1 and model.seen == 20 * 76 + 2 * 20 * 5  # frost's blue confuses it
    assert record["mean_accuracy"] == pytest.approx(np.mean(every))
    noise = [record["accuracy"][name] for name in FAMILIES["noise"]]
    assert record["families"]["noise"] == pytest.approx(np.mean(noise))
    digest = hashlib.sha256(images.tobytes())
    for name in CORRUPTIONS:
        for severity in range(1, 6):
            digest.update(corrupt(images, name, severity, 3).tobytes())
    assert record["images_sha256"] == digest.hexdigest()
    assert lines[0] == "20 test images, clean and under 15 corruptions x 5 severities: 1,520 predictions"
    assert lines[1].startswith("clean accuracy 1.0000 in ") and "75 corrupted passes to go" in lines[1]
    assert [line.split("]")[1].split()[0] for line in lines[2:]] == list(CORRUPTIONS)
    assert lines[2].startswith("[ 1/15] gaussian_noise    1.000 ")
    assert lines[-1].startswith("[15/15] jpeg_compression")
    other_seed = score_corruptions(RednessModel(), images, labels, seed=4)
    assert other_seed["images_sha256"] != record["images_sha256"]


def test_score_corruptions_predicts_with_the_runs_test_time_augmentation():
    images, labels = red_and_blue(10)
    for level, variants in ((1, 2), (2, 6)):
        lines, model = [], RednessModel()
        record = score_corruptions(model, images, labels, seed=0, augmentation=level, log=lines.append)
        assert lines[0].endswith(f"760 predictions, each as {variants} variants (test-time augmentation)")
        assert model.seen == variants * 760
    # The model sees mean colours, which mirror images share: with mirrors blended in it answers the same
    mirrored = score_corruptions(RednessModel(), images, labels, seed=0, augmentation=1)
    assert mirrored["accuracy"] == score_corruptions(RednessModel(), images, labels, seed=0)["accuracy"]


def test_corruption_scores_round_trip_through_metrics_json_and_print_as_a_table(tmp_path):
    images, labels = red_and_blue(10)
    record = score_corruptions(RednessModel(), images, labels, seed=0)
    metrics = {**valid_metrics(), "corruptions": record}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert read_metrics(tmp_path / "metrics.json")["corruptions"] == record
    table = format_corruptions(record).splitlines()
    assert table[0].startswith(f"corruptions (10 test images, seed 0): clean accuracy {record['clean_accuracy']:.4f}")
    assert table[1].split() == ["corruption", "1", "2", "3", "4", "5", "mean"]
    fog = next(line for line in table if line.split()[0] == "fog").split()
    assert fog[1:6] == [f"{value:.3f}" for value in record["accuracy"]["fog"]]
    assert len(table) == 18 and table[-1].startswith("  families: noise ")


def test_the_corruption_sample_is_stratified_seeded_and_in_test_set_order():
    labels = np.repeat(np.arange(10), 100)
    sample = corruption_sample(labels, 40, seed=0)
    assert len(sample) == 40 and np.all(np.diff(sample) > 0)
    assert np.bincount(labels[sample]).tolist() == [4] * 10
    np.testing.assert_array_equal(sample, corruption_sample(labels, 40, seed=0))
    assert not np.array_equal(sample, corruption_sample(labels, 40, seed=1))
    for everything in (None, 1000, 5000):
        np.testing.assert_array_equal(corruption_sample(labels, everything, seed=0), np.arange(1000))
