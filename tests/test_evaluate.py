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
