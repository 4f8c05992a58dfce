from PIL import Image

from cnnlab.figures import plot_confusion_matrix, plot_learning_curves


def test_learning_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_learning_curves({"epoch": [0, 1, 2], "loss": [2, 1.5, 1.2], "val_loss": [2.1, 1.7, 1.6],
                          "accuracy": [0.3, 0.5, 0.6], "val_accuracy": [0.3, 0.45, 0.5]}, path, "run")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 500
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind


def test_confusion_matrix_png(tmp_path):
    path = tmp_path / "confusion.png"
    plot_confusion_matrix([[5, 1], [2, 7]], ("cat", "dog"), path)
    with Image.open(path) as image:
        assert image.format == "PNG"
