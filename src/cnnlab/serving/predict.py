"""Predictions on one's own images, read by the shared loader at the model's input size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.images import load_image
from cnnlab.evaluation.scoring import predict_probabilities


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int = 3) -> list[dict[str, object]]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": class_names[i], "probability": float(probabilities[i])} for i in order]


def classify(model, images: list[np.ndarray], class_names: tuple[str, ...], k: int = 3,
             augmentation: int = 0) -> list[list[dict[str, object]]]:
    """Top-k classes for each image, already decoded at the model's input size, scored with the run's test-time
    augmentation: the one path from pixels to answers that `predict` and `serve` share."""
    probabilities = predict_probabilities(model, np.stack(images), augmentation=augmentation)
    return [top_k(row, class_names, k) for row in probabilities]


def predict_images(model, paths: list[Path], class_names: tuple[str, ...], k: int = 3, augmentation: int = 0,
                   resize: str = "stretch") -> list[dict[str, object]]:
    """Top-k classes for each image, brought to the model's input size by the run's own `resize` mode and scored
    with its own test-time augmentation, so that answers match its test accuracy; every image is read (and refused
    if bad) before the model runs."""
    height, width = model.input_shape[1:3]
    images = [load_image(path, (height, width), resize=resize) for path in paths]
    tops = classify(model, images, class_names, k, augmentation)
    return [{"image": str(path), "top": top} for path, top in zip(paths, tops)]
