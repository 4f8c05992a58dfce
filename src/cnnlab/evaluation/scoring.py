"""Evaluation on the test set: loss, accuracy, per-class accuracy and the confusion matrix, from one pass; and, on
request, accuracy under the 15 common corruptions of CIFAR-10-C at 5 severities (`score_corruptions`)."""

from __future__ import annotations

import hashlib
import time

import numpy as np

from cnnlab.common.errors import CnnlabError
from cnnlab.data.sampling import stratified_sample

EPSILON = 1e-7  # Keras clips probabilities the same way in categorical_crossentropy


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256, augmentation: int = 0,
                          shown_as: str | None = None) -> np.ndarray:
    """Class probabilities for `images`; with test-time augmentation, a blend of the model's answers for variants.

    Level 1 averages each image with its mirror image; level 2 gives that half the weight and the other half to the
    same for the image shifted one pixel up-left and one down-right (reflected border). Answers are averaged as
    log-probabilities, as one would average logits. With `shown_as`, a long pass shows a progress bar of that name.
    """
    bar = None
    if shown_as:
        from cnnlab.evaluation.progress import PassProgress, batches_of  # imports Keras, which callers start later

        bar = PassProgress(shown_as, TTA_VARIANTS[augmentation] * batches_of(len(images), batch_size))

    def log_probabilities(variant: np.ndarray) -> np.ndarray:
        # One batch's worth goes straight to the compiled function: `predict` sets up a data adapter and callbacks on
        # every call, about 0.1 s here, which was most of a served request's time (benchmarks/serve_load.py).
        predicted = (model.predict_on_batch(variant) if len(variant) <= batch_size
                     else model.predict(variant, batch_size=batch_size, verbose=0, callbacks=[bar] if bar else None))
        predicted = np.asarray(predicted, dtype=np.float64)
        return np.log(np.clip(predicted, EPSILON, 1.0))

    def with_mirror(variant: np.ndarray) -> np.ndarray:
        if augmentation == 0:
            return log_probabilities(variant)
        return 0.5 * (log_probabilities(variant) + log_probabilities(variant[:, :, ::-1]))

    blended = with_mirror(images)
    if augmentation >= 2:
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        height, width = images.shape[1:3]
        shifted = [padded[:, :height, :width], padded[:, 2 : height + 2, 2 : width + 2]]
        blended = 0.5 * blended + 0.25 * sum(with_mirror(variant) for variant in shifted)
    if bar:
        bar.close()
    probabilities = np.exp(blended - blended.max(axis=1, keepdims=True))
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def metrics_from_probabilities(
    probabilities: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, object]:
    """Everything the report needs from the test set, computed from the model's probabilities."""
    labels = np.asarray(labels, dtype=int)
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    true_class_probability = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)  # rows: true class, columns: predicted class
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_accuracy": float((predicted == labels).mean()),
        "test_loss": float(-np.log(true_class_probability).mean()),
        "per_class_accuracy": {name: float(acc) for name, acc in zip(class_names, per_class)},
        "confusion_matrix": confusion.tolist(),
    }


# Robustness to common corruptions. cnnlab.evaluation.corruptions is imported when used: it imports SciPy.

TTA_VARIANTS = {0: 1, 1: 2, 2: 6}  # images the model sees per test image at each test-time augmentation level


def check_corruption_settings(images: int | None, seed: int) -> None:
    """Refuse a sample size below 1 or a seed out of range, before anything is loaded."""
    if images is not None and (type(images) is not int or images < 1):
        raise CnnlabError(f"the number of corruption images must be at least 1, got {images}")
    if type(seed) is not int or not 0 <= seed < 2**32:
        raise CnnlabError(f"the corruption seed must be in 0..2**32-1, got {seed}")


def corruption_sample(labels: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Indices of `count` test images, stratified by class and drawn with `seed`, in test-set order; all of them when
    `count` is None or not below the number of test images."""
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    return stratified_sample(labels, count, seed)


def score_corruptions(model, images: np.ndarray, labels: np.ndarray, seed: int, batch_size: int = 256,
                      augmentation: int = 0, log=lambda line: None) -> dict[str, object]:
    """Accuracy of `model` on `images`, clean and under every corruption at every severity (`corrupt` with `seed`),
    predicted as the test set is (`predict_probabilities`); returns the "corruptions" record of metrics.json.
    `log` gets the plan, the time it will take and one line per corruption."""
    from cnnlab.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt

    def accuracy(batch: np.ndarray) -> float:
        predicted = predict_probabilities(model, batch, batch_size, augmentation).argmax(axis=1)
        return float((predicted == labels).mean())

    started = time.perf_counter()
    passes = len(CORRUPTIONS) * len(SEVERITIES)
    variants = f", each as {TTA_VARIANTS[augmentation]} variants (test-time augmentation)" if augmentation else ""
    log(f"{len(labels):,} test images, clean and under {len(CORRUPTIONS)} corruptions x {len(SEVERITIES)} severities: "
        f"{len(labels) * (passes + 1):,} predictions{variants}")
    clean = accuracy(images)
    clean_seconds = time.perf_counter() - started
    log(f"clean accuracy {clean:.4f} in {_duration(clean_seconds)}; {passes} corrupted passes to go, about "
        f"{_duration(passes * clean_seconds)} of predicting, plus corrupting the images")
    digest = hashlib.sha256(np.ascontiguousarray(images).data)  # identical images give identical fingerprints
    scores = {}
    for number, name in enumerate(CORRUPTIONS, 1):
        scores[name] = []
        for severity in SEVERITIES:
            corrupted = corrupt(images, name, severity, seed)
            digest.update(corrupted.data)
            scores[name].append(accuracy(corrupted))
        elapsed, left = time.perf_counter() - started, len(CORRUPTIONS) - number
        log(f"[{number:2}/{len(CORRUPTIONS)}] {name:<17} " + " ".join(f"{value:.3f}" for value in scores[name])
            + f"  ({_duration(elapsed)}" + (f", about {_duration(elapsed * left / number)} left)" if left else ")"))
    return corruption_record(seed, clean, scores, digest.hexdigest(), time.perf_counter() - started, len(labels))


def corruption_record(seed: int, clean: float, scores: dict[str, list[float]], images_sha256: str, seconds: float,
                      images: int) -> dict[str, object]:
    """What metrics.json keeps: the accuracies, their mean over all corruptions and severities and per family, and a
    fingerprint of every image scored (clean and corrupted), equal for runs that saw the same images."""
    from cnnlab.evaluation.corruptions import FAMILIES

    return {
        "seed": seed,
        "images": images,
        "clean_accuracy": clean,
        "accuracy": scores,
        "mean_accuracy": float(np.mean(list(scores.values()))),
        "families": {family: float(np.mean([scores[name] for name in names])) for family, names in FAMILIES.items()},
        "images_sha256": images_sha256,
        "seconds": round(seconds, 2),
    }


def format_corruptions(record: dict) -> str:
    """The corruption scores as a table: a row per corruption, a column per severity, then the family means."""
    lines = [f"corruptions ({record['images']:,} test images, seed {record['seed']}): clean accuracy "
             f"{record['clean_accuracy']:.4f}, corrupted {record['mean_accuracy']:.4f} (mean of all)",
             f"  {'corruption':<17}" + "".join(f"{severity:>7}" for severity in range(1, 6)) + f"{'mean':>7}"]
    for name, row in record["accuracy"].items():
        lines.append(f"  {name:<17}" + "".join(f"{value:7.3f}" for value in row) + f"{np.mean(row):7.3f}")
    lines.append("  families: " + ", ".join(f"{family} {value:.3f}" for family, value in record["families"].items()))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
