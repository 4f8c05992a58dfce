# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A CNN from scratch vs a pretrained VGG16 on CIFAR-10
#
# **Author:** the cnnlab developers<br>
# **Date created:** 2026-11-26<br>
# **Last modified:** 2026-11-26<br>
# **Description:** Train a small convolutional network from scratch on CIFAR-10, put a new head on VGG16's
# pretrained features, and compare the two on the same test images, with cnnlab's Python API.
#
# This file is a script and a notebook at once (jupytext's "percent" format): `python docs/tutorial.py` runs it
# top to bottom, and Jupyter (with jupytext) opens it as a notebook. [tutorial.md](tutorial.md) is what it printed
# and drew on the full data set, with the hardware and the time it took, written by `docs/render_tutorial.py`, never
# by hand.

# %% [markdown]
# ## Introduction
#
# CIFAR-10 is 60,000 colour photographs of 32x32 pixels in ten classes (airplane, automobile, bird, cat, deer, dog,
# frog, horse, ship, truck): 50,000 to train on and 10,000 to test on. The classic Keras tutorial that cnnlab grew
# out of asks a simple question of it: does a small network trained from scratch beat a big one that was trained
# on ImageNet first? Its recipe is the one used here:
#
# - a CNN of two convolutional blocks (conv 32-32, max pooling, dropout 0.25; conv 64-64, max pooling, dropout
#   0.25), then dense 512 with dropout 0.5 and a 10-way softmax;
# - VGG16 with its ImageNet top removed and new dense layers for the 10 classes;
# - Adam at learning rate 0.001, batch 32, categorical cross-entropy, pixel values scaled to [0, 1];
# - test accuracy and test loss as the measure.
#
# cnnlab turns that recipe into settings (a *preset*), runs each model into a *run directory* (its configuration,
# the trained model, its history, its test scores and figures), and compares finished runs in a *report*. This
# walkthrough uses the Python API that the `cnnlab` command line is built on.
#
# Three environment variables change what it runs:
#
# - `CNNLAB_DATA`: a `cifar-10-python.tar.gz` (or the extracted folder). Unset: the official archive is
#   downloaded by Keras and its hash checked.
# - `CNNLAB_TUTORIAL_WEIGHTS`: VGG16's starting weights: `imagenet` (the default, downloaded by Keras), the path
#   of a VGG16 no-top `.h5` file, or `none` for random weights.
# - `CNNLAB_TUTORIAL_SMALL=1`: a small run, to check that the code works (CI runs it so): a few hundred training
#   images, one epoch, narrow layers, VGG16 cut after its first block. Its numbers mean nothing.
#
# and `CNNLAB_TUTORIAL_OUT` names the folder the runs go to (default: a new `runs/tutorial-<time>`).

# %% [markdown]
# ## Setup
#
# `cnnlab.import_keras()` starts Keras as the command line does: quietly (TensorFlow prints a page of notices on
# start-up), on the backend `KERAS_BACKEND` names (TensorFlow unless told otherwise). `show` displays a figure a
# run saved: inline in a notebook; as a `figure: PATH` line in a terminal, which the renderer turns into an image.

# %%
import os
import re
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import cnnlab
from cnnlab.report.builder import load_finished_run
from cnnlab.report.verdict import verdict_paragraph

SMALL = os.environ.get("CNNLAB_TUTORIAL_SMALL", "") not in ("", "0")
DATA = os.environ.get("CNNLAB_DATA") or None
WEIGHTS = os.environ.get("CNNLAB_TUTORIAL_WEIGHTS") or "imagenet"
OUT = Path(os.environ.get("CNNLAB_TUTORIAL_OUT") or f"runs/tutorial-{time.strftime('%Y%m%d-%H%M%S')}")
started = time.perf_counter()

cnnlab.import_keras()


def show(path):
    """Display a saved figure: inline in a notebook, its path in a terminal."""
    print(f"figure: {path}")
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(path)))


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


print(f"cnnlab {cnnlab.__version__}; runs go to {OUT}" + (" (small run)" if SMALL else ""))

# %% [markdown]
# ## Data preparation
#
# One preset configures both models, so that they are trained under the same recipe. `quick` is the tutorial's
# CNN for 4 epochs instead of 50, and VGG16's new head trained on its frozen features: both finish in minutes on a
# laptop CPU (`seed` is the full 50-epoch tutorial: hours). The preset is a TOML file
# (`src/cnnlab/config/presets/quick.toml`); any of its values can be overridden by name, as the data source and VGG16's
# weights are here. The result is one frozen, checked `RunConfig`: a bad value is refused now, not an hour into
# training.

# %%
PRESET = "quick"
overrides = {"data.source": DATA, "vgg16.weights": WEIGHTS}
if SMALL:
    overrides |= {
        "data.train_limit": 300,  # the first 300 training images (after the validation split)
        "data.val_size": 100,
        "train.epochs": 1,
        "cnn.conv_blocks": [[8], [16]],
        "cnn.dense_units": [32],
        "vgg16.head_units": [16],
        # VGG16 cut after its first block: through blocks 1-4, scoring the 10,000 test images takes minutes on a CPU
        "vgg16.top_block": 1,
    }
cnn_config = cnnlab.load_config(PRESET, overrides)
vgg16_config = cnnlab.load_config(PRESET, {**overrides, "model": "vgg16"})
print(cnn_config.description)
print(f"batch {cnn_config.train.batch_size}, learning rate {cnn_config.train.learning_rate} "
      f"({cnn_config.train.optimizer}, {cnn_config.train.lr_schedule}), epochs: {cnn_config.train.epochs}, "
      f"validation {cnn_config.data.val_size:g} of the training images")

# %% [markdown]
# `load_dataset` reads the archive without unpickling arbitrary objects (the official files are pickles), checks
# the shapes and the hash, and caches the decoded arrays. `make_splits` then carves the validation images out of
# the training set, stratified by class and seeded, so that every run of the same preset validates on the same
# images. The test set is left alone until the end.

# %%
data = cnnlab.load_dataset(cnn_config.data, cnn_config.train.seed)
splits = cnnlab.make_splits(data, cnn_config.data.val_size, cnn_config.train.seed, cnn_config.data.train_limit)
print(f"source: {data.record.path} ({data.record.hash_status})")
print("classes:", ", ".join(data.class_names))
for name, images, labels in [("train", splits.x_train, splits.y_train), ("validation", splits.x_val, splits.y_val),
                             ("test", splits.x_test, splits.y_test)]:
    print(f"{name:>10}: images {images.shape} {images.dtype}, labels {labels.shape}, "
          f"per class {np.bincount(labels, minlength=len(data.class_names)).min()}"
          f"-{np.bincount(labels, minlength=len(data.class_names)).max()}")
print(f"pixel values: {splits.x_train.min()} to {splits.x_train.max()}")

# %% [markdown]
# The images stay as they are stored: uint8, 0 to 255. The original tutorial divided them by 255 before training;
# here each model does that itself, as its first layer, so a saved model takes raw images from whoever calls it (and
# VGG16 gets the ImageNet preprocessing it was trained with instead). One training image of each class:

# %%
figure = Figure(figsize=(10, 4.4))
for axis, class_index in zip(figure.subplots(2, 5).flat, range(len(data.class_names))):
    first = np.flatnonzero(splits.y_train == class_index)
    if len(first):
        axis.imshow(splits.x_train[first[0]])
    axis.set_title(data.class_names[class_index])
    axis.axis("off")
OUT.mkdir(parents=True, exist_ok=True)
figure.savefig(OUT / "samples.png", dpi=80, bbox_inches="tight")
show(OUT / "samples.png")

# %% [markdown]
# ## Model architecture
#
# `build_model` builds a model from a configuration, as a run will: the same layers, the same seeded initial
# weights, in the precision the machine computes best (bfloat16 where the CPU has it natively, float32 otherwise).
# These two are built only to be looked at; `train_run` below builds its own.
#
# The CNN is the tutorial's, layer for layer, with two differences: the scaling to [0, 1] is its first layer, and
# its convolutions and dense layers start from He initialisation, the usual choice before ReLU (Keras defaults to
# Glorot). In a small run its layers are narrower.

# %%
image_shape = splits.x_train.shape[1:]
cnn = cnnlab.build_model(cnn_config, len(data.class_names), image_shape)
cnn.summary()

# %% [markdown]
# VGG16's thirteen convolutions were trained on ImageNet's 1.3 million photographs at 224x224 pixels. Its top (the
# three dense layers of the ImageNet classifier) is replaced with a new head for ten classes. At CIFAR-10's 32
# pixels the fifth block sees a 2x2 map, and the `quick` preset stops at block 4 instead (`vgg16.top_block`): its
# head sits on block 4's output, normalised, a choice measured on the validation split (benchmarks/RESULTS.md).
#
# With `CNNLAB_TUTORIAL_WEIGHTS=none` the trunk starts from random weights. Such a run still works as code, but it
# says nothing about transfer learning; the report says so too.

# %%
vgg16 = cnnlab.build_model(vgg16_config, len(data.class_names), image_shape)
vgg16.summary()
trunk = vgg16.get_layer("trunk").count_params()
head = sum(layer.count_params() for layer in vgg16.layers if layer.name.startswith("head_")
           or layer.name == "probabilities")
print(f"{cnnlab.model_label(vgg16_config)}: {trunk:,} parameters in the trunk (frozen while the head trains), "
      f"{head:,} in the new head")
print(f"{cnnlab.model_label(cnn_config)}: {cnn.count_params():,} parameters, all trained")

# %% [markdown]
# ## Training
#
# `train_run` does what `cnnlab train` does: it builds the model, trains it on the training split with the
# validation split watched after every epoch, keeps the weights of the epoch with the best validation accuracy,
# scores them on the test set, and writes everything into one run directory. Training can be interrupted and
# resumed (`cnnlab.resume_run`); batches are drawn in an order fixed by the seed, so a run can be repeated.
#
# Keras prints one line per epoch; in `quick` the learning rate falls linearly from 0.001 to 0 over the run, so that
# a short run ends at a small step size.

# %%
cnn_run = cnnlab.train_run(cnn_config, OUT / "cnn")
print(f"run directory: {cnn_run}")
print("files:", ", ".join(sorted(path.name for path in cnn_run.iterdir())))

# %% [markdown]
# ## Evaluating
#
# The run has already been scored on the 10,000 test images, which no step of training saw; `metrics.json` holds
# the scores with the hardware, the library versions and the time it took.

# %%
cnn_metrics = cnnlab.read_metrics(cnn_run / "metrics.json")
print(f"test accuracy {cnn_metrics['test_accuracy']:.4f}, test loss {cnn_metrics['test_loss']:.4f}")
print(f"epochs: {cnn_metrics['epochs']}, trained in {duration(cnn_metrics['train_seconds'])} "
      f"({cnn_metrics['seconds_per_epoch']:.1f} s per epoch); the saved weights are those of epoch "
      f"{cnn_metrics['best_epoch']}")
for name, accuracy in cnn_metrics["per_class_accuracy"].items():
    print(f"  {name:<12} {accuracy:6.1%}")
show(cnn_run / "figures" / "learning_curves.png")
show(cnn_run / "figures" / "confusion_matrix.png")

# %% [markdown]
# The learning curves show whether more epochs would help (validation still improving) or hurt (validation loss
# rising while training loss falls: overfitting). The confusion matrix shows which classes are mistaken for which:
# on CIFAR-10 usually cats for dogs and the reverse, and automobiles for trucks.
#
# The saved model is a plain Keras model that takes raw images. Loaded back from the run directory, it answers for
# a few test images:

# %%
model = cnnlab.load_run_model(cnn_run)
probabilities = model.predict(splits.x_test[:8], verbose=0)
for truth, answer in zip(splits.y_test[:8], probabilities):
    guess = int(answer.argmax())
    mark = "" if guess == truth else "   <- wrong"
    print(f"{data.class_names[truth]:>12}: {data.class_names[guess]:<12} {answer[guess]:6.1%}{mark}")

# %% [markdown]
# ## Fine-tuning VGG16
#
# Transfer learning is done in two phases. First the pretrained trunk is frozen and only the new head trains:
# the trunk then computes the same features for an image every epoch, so cnnlab computes them once and trains the
# head on them (`vgg16.feature_cache`): the trunk's pass over the images, minutes on two CPU cores, then runs
# once instead of every epoch, and an epoch of the head costs only the head (the output below shows both times).
# Second, optionally, the top blocks are unfrozen and trained on at a learning rate 10 to 100 times lower, so that
# the pretrained features are adjusted, not destroyed.
#
# The `quick` preset runs only the first phase: on two CPU cores, one epoch of fine-tuning a conv block costs about
# 15 minutes. The `seed` preset (the original tutorial) fine-tunes block 5 for 10 epochs at 1e-5; adding
# `"vgg16.unfreeze_blocks": 1, "vgg16.finetune_epochs": 2` to the overrides above gives this run a short second
# phase, on block 4.

# %%
vgg16_run = cnnlab.train_run(vgg16_config, OUT / "vgg16")
vgg16_metrics = cnnlab.read_metrics(vgg16_run / "metrics.json")
print(f"{vgg16_metrics['label']} (weights: {vgg16_metrics['weights']})")
print(f"test accuracy {vgg16_metrics['test_accuracy']:.4f}, test loss {vgg16_metrics['test_loss']:.4f}")
for phase in vgg16_metrics["phases"]:
    print(f"phase {phase['name']}: epochs: {phase['epochs']}, learning rate {phase['learning_rate']:g}, "
          f"{phase['trainable_parameters']:,} trainable parameters, {phase['seconds_per_epoch']:.1f} s per epoch "
          f"after {phase['feature_cache_seconds'] or 0:.0f} s computing the frozen features")
show(vgg16_run / "figures" / "learning_curves.png")
show(vgg16_run / "figures" / "confusion_matrix.png")

# %% [markdown]
# ## Conclusion
#
# `write_report` compares finished runs on the same test images: a table, the learning curves side by side,
# per-class accuracy, both confusion matrices, test images with each model's answers, and a verdict
# written from the numbers, with McNemar's test of whether the difference is more than chance (both models were
# scored on the same 10,000 images, so each image is a paired trial). `report.html` is one self-contained file;
# `report.md` sits beside it. Below: the verdict, then the report's figures that the runs above did not draw.

# %%
report_html = cnnlab.write_report([cnn_run, vgg16_run], OUT / "report")
print(f"report: {report_html}")
runs = [load_finished_run(run_dir) for run_dir in (cnn_run, vgg16_run)]
print()
print(verdict_paragraph(runs, [run.label for run in runs]))
report_md = (report_html.parent / "report.md").read_text(encoding="utf-8")
for figure_file in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report_md):
    if not figure_file.startswith(("figures/learning_curves", "figures/confusion_matrix")):  # drawn per run above
        show(report_html.parent / figure_file)

# %% [markdown]
# What this run measured, and on what; a small run (`CNNLAB_TUTORIAL_SMALL=1`) trains on a few hundred images for
# one epoch, so its numbers say only that the code works:

# %%
hardware = cnn_metrics["hardware"]
versions = cnn_metrics["versions"]
print(f"preset {PRESET}" + (" (small run)" if SMALL else "") + f", {len(splits.y_train):,} training images, "
      f"{len(splits.y_test):,} test images")
for run in runs:
    print(f"  {run.label:<40} test accuracy {run.metrics['test_accuracy']:.2%}, loss {run.metrics['test_loss']:.3f}, "
          f"trained in {duration(run.metrics['train_seconds'])}")
print(f"on {hardware['cpu']} ({hardware['cpu_cores']} cores; native bfloat16: {hardware['native_bfloat16']}; "
      f"accelerators: {', '.join(hardware['accelerators']) or 'none'})")
print(f"with Keras {versions['keras']} on {versions['backend']}, Python {versions['python']}")
print(f"the whole walkthrough took {duration(time.perf_counter() - started)}")

# %% [markdown]
# The small network trained from scratch has every one of its weights shaped by CIFAR-10. VGG16's frozen trunk was
# shaped by ImageNet's larger photographs, and at 32 pixels its features fit CIFAR-10 less well than its size
# suggests; upscaling the images (`vgg16.image_size`, the `transfer` preset) and fine-tuning its top blocks (`seed`)
# help, at many times the cost. Which wins depends on the budget and on the trunk: measured with a stand-in
# pretrained trunk (HED's VGG16, as ImageNet's weights could not be fetched there; benchmarks/RESULTS.md), the CNN
# won under `quick` (73.6% against 63.2%), and under `transfer` VGG16's frozen features at 64 px reached 76.2%,
# short of the 50-epoch CNN's 78.3%. The numbers above say what these weights did, on this machine.
#
# They are one seed each: the report's McNemar test says whether their difference is more than chance on these
# test images, not whether it would hold for other seeds (`benchmarks/preset_seeds.py` runs several).
#
# Next steps: `cnnlab train --preset seed` for the full 50-epoch tutorial, `--preset fast` for a different network
# that reached 94% in about 17 minutes on two Zen 4 cores with native bfloat16 (measured with older code; on a
# CPU with AVX2 alone it takes about 2.5 hours), and `cnnlab predict RUN_DIR photo.jpg` for your own pictures.
