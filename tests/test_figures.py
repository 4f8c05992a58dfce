import numpy as np
from PIL import Image

from cnnlab.figures import plot_confusion_matrix, plot_learning_curves, plot_per_class_accuracy, plot_prediction_grid

HISTORY = {"epoch": [0, 1, 2], "loss": [2, 1.5, 1.2], "val_loss": [2.1, 1.7, 1.6],
           "accuracy": [0.3, 0.5, 0.6], "val_accuracy": [0.3, 0.45, 0.5]}


def assert_png(path, min_width=300):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width


def test_learning_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_learning_curves({"run": HISTORY}, path, "run")
    assert_png(path, 500)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind


def test_learning_curves_of_several_models_on_one_figure(tmp_path):
    path = tmp_path / "both.png"
    plot_learning_curves({"CNN": HISTORY, "VGG16": {**HISTORY, "epoch": [0, 1]} | {k: v[:2] for k, v in HISTORY.items()}},
                         path)
    assert_png(path, 500)


def test_confusion_matrix_png(tmp_path):
    path = tmp_path / "confusion.png"
    plot_confusion_matrix([[5, 1], [2, 7]], ("cat", "dog"), path)
    assert_png(path)


def test_per_class_and_prediction_grid_pngs(tmp_path):
    plot_per_class_accuracy({"a": [0.5, 0.9], "b": [0.7, 0.2]}, ("cat", "dog"), tmp_path / "per_class.png")
    assert_png(tmp_path / "per_class.png")
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    plot_prediction_grid(images, labels, {"CNN x": labels, "VGG16 y": 1 - labels}, ("cat", "dog"),
                         tmp_path / "grid.png", columns=4)
    assert_png(tmp_path / "grid.png")
