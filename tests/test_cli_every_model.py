"""Every command that reads a run, on every model kind, each in a fresh `python -m cnnlab` process (`evaluate` with
`--corruptions`, which re-scores the test set as a plain `evaluate` does, then the corrupted images). With
conftest.kind_runs (train) and tests/test_serving_export.py (export, and predict on the export) this is the end-to-end check
of every user command on every kind, on tiny runs scored on 1,000 synthetic test images.

A test process has imported all of cnnlab already, which once hid that a fast net's `model.keras` could not be
loaded by `predict` or `evaluate` in a user's fresh process. Here each command starts from nothing, as a user's does.
"""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from conftest import DEFAULT_TIER_KINDS, copy_of, kind_params, run_cnnlab, run_metrics

# The full tier adds the seed preset's five-block VGG16, the transfer preset's (block 4, cached features, a normalised
# head) and the CNN in bfloat16 (what "auto" gives on CPUs that have it).
EVERY_KIND = [*kind_params(), *(pytest.param(kind, marks=pytest.mark.slow) for kind in ("vgg16-seed", "vgg16-transfer",
                                                                               "cnn-bfloat16"))]


CORRUPTION_IMAGES, CORRUPTION_SEED = 40, 3


@pytest.fixture(scope="module")
def evaluated(kind_runs, tmp_path_factory):
    """evaluated(kind): a copy of the kind's run (conftest.KIND_RUNS) re-scored once by `python -m cnnlab evaluate RUN
    --corruptions` (on 40 test images, to keep it short), as (the copy, its metrics before, the finished process).
    One process per run serves the re-score checks and the corruption checks."""
    results = {}

    def evaluate(kind):
        if kind not in results:
            run_dir = copy_of(kind_runs[kind], tmp_path_factory.mktemp("evaluated"))
            before = run_metrics(run_dir)
            done = run_cnnlab("evaluate", run_dir, "--corruptions", "--corruption-images", CORRUPTION_IMAGES,
                              "--corruption-seed", CORRUPTION_SEED)
            assert done.returncode == 0, done.stderr
            results[kind] = run_dir, before, done
        return results[kind]

    return evaluate


@pytest.mark.parametrize("kind", EVERY_KIND)
def test_evaluate_in_a_fresh_process_rescores_to_the_same_accuracy(evaluated, kind):
    _, before, done = evaluated(kind)
    assert done.stdout.splitlines()[0] == (f"test accuracy {before['test_accuracy']:.4f}, "
                                           f"test loss {before['test_loss']:.4f}")


@pytest.mark.parametrize("kind", EVERY_KIND)
def test_predict_in_a_fresh_process_gives_the_models_own_answer(kind_runs, kind, tmp_path):
    # The synthetic classes are colours: an image of one class's colour is classified as the run's test set was.
    probabilities = np.load(kind_runs[kind] / "test_predictions.npz")["probabilities"].astype(float)
    classes = run_metrics(kind_runs[kind])["data"]["classes"]
    done = run_cnnlab("predict", kind_runs[kind], "--json", *write_test_images(kind_runs[kind], tmp_path, 3))
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [answer["image"] for answer in answers] == [str(tmp_path / f"test{i}.png") for i in range(3)]
    for index, answer in enumerate(answers):
        assert answer["top"][0]["class"] == classes[int(np.argmax(probabilities[index]))]
        assert answer["top"][0]["probability"] == pytest.approx(probabilities[index].max(), abs=0.02)


def write_test_images(run_dir, folder, count):
    """The run's first test images as PNG files, exactly as the model saw them."""
    from cnnlab.config import config_from_dict
    from cnnlab.data import load_dataset

    config = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    data = load_dataset(config.data, config.train.seed)
    paths = []
    for index in range(count):
        paths.append(folder / f"test{index}.png")
        Image.fromarray(data.x_test[index]).save(paths[-1])
    return paths


def test_report_in_a_fresh_process_compares_every_kind(kind_runs, tmp_path):
    runs = [kind_runs[kind] for kind in DEFAULT_TIER_KINDS]
    done = run_cnnlab("report", *runs, "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    for run_dir in runs:
        assert f"{run_metrics(run_dir)['test_accuracy']:.2%}" in markdown


@pytest.mark.slow
def test_the_transfer_preset_trains_its_head_alone_on_cached_block_4_features(kind_runs):
    metrics = run_metrics(kind_runs["vgg16-transfer"])
    assert metrics["label"] == "VGG16 to block 4 from scratch"
    (head,) = metrics["phases"]
    assert head["name"] == "head" and head["epochs"] == 1 and head["feature_cache_seconds"] > 0
    assert head["trainable_parameters"] == 2 * 2 * 512 * 16 + 16 + 16 * 10 + 10 + 2 * 2 * 2 * 512  # dense, BN scale+shift


def test_data_info_in_a_fresh_process_counts_the_classes(synthetic_archive):
    done = run_cnnlab("data", "info", "--data", synthetic_archive)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["total", "45000", "5000", "10000"]


def corruption_sample_of(run_dir, count, seed):
    """The test images and labels `evaluate --corruptions --corruption-images COUNT --corruption-seed SEED` scores."""
    from cnnlab.config import config_from_dict
    from cnnlab.data import load_dataset
    from cnnlab.evaluation.scoring import corruption_sample

    config = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    data = load_dataset(config.data, config.train.seed)
    index = corruption_sample(data.y_test, count, seed)
    return data.x_test[index], data.y_test[index], config.train.evaluation_batch_size


@pytest.mark.parametrize("kind", EVERY_KIND)
def test_evaluate_corruptions_records_what_the_saved_model_scores_on_the_seeded_images(evaluated, kind):
    from cnnlab.evaluation.corruptions import corrupt
    from cnnlab.evaluation.scoring import predict_probabilities
    from cnnlab.runs.run import load_run_model

    run_dir, _, done = evaluated(kind)
    metrics = run_metrics(run_dir)
    record = metrics["corruptions"]
    assert (record["seed"], record["images"]) == (CORRUPTION_SEED, CORRUPTION_IMAGES)
    images, labels, batch_size = corruption_sample_of(run_dir, CORRUPTION_IMAGES, CORRUPTION_SEED)
    model = load_run_model(run_dir)

    def accuracy(batch):
        probabilities = predict_probabilities(model, batch, batch_size, metrics["test_time_augmentation"])
        return float((probabilities.argmax(axis=1) == labels).mean())

    assert accuracy(images) == record["clean_accuracy"]
    recomputed = [accuracy(corrupt(images, "frost", severity, CORRUPTION_SEED)) for severity in range(1, 6)]
    assert recomputed == record["accuracy"]["frost"]
    assert f"  frost            {''.join(f'{value:7.3f}' for value in recomputed)}" in done.stdout
    assert "[15/15] jpeg_compression" in done.stderr


def test_every_run_was_scored_on_the_same_corrupted_images(kind_runs, evaluated):
    from cnnlab.evaluation.corruptions import CORRUPTIONS, corrupt

    fingerprints = {kind: run_metrics(evaluated(kind)[0])["corruptions"]["images_sha256"] for kind in DEFAULT_TIER_KINDS}
    images, _, _ = corruption_sample_of(kind_runs["cnn"], CORRUPTION_IMAGES, CORRUPTION_SEED)
    digest = hashlib.sha256(images.tobytes())
    for name in CORRUPTIONS:
        for severity in range(1, 6):
            digest.update(corrupt(images, name, severity, CORRUPTION_SEED).tobytes())
    assert fingerprints == dict.fromkeys(DEFAULT_TIER_KINDS, digest.hexdigest())
