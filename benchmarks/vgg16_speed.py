"""VGG16 seconds per epoch at 32 px through cnnlab's own training code: the frozen phase with and without the
feature cache, and phase 2 (last block unfrozen). Prints the speed-up of the cache for the preset's phase-1 epochs.

    .venv/bin/python benchmarks/vgg16_speed.py --data PATH/TO/cifar-10-python.tar.gz [--train-limit N] [--epochs E]

Weights are random (`none`): speed does not depend on their values, and ImageNet's cannot be fetched everywhere.
"""

import argparse
import tempfile
from pathlib import Path

import keras

from cnnlab.backends import machine
from cnnlab.config import DataConfig, load_config
from cnnlab.data import load_dataset, make_splits
from cnnlab.models.factory import build_model
from cnnlab.runs.run import Run
from cnnlab.training.trainer import train_model


def timed_phases(overrides: dict, splits, work: Path, name: str) -> list[dict]:
    config = load_config("seed", {"model": "vgg16", "vgg16.weights": "none", **overrides})
    keras.utils.set_random_seed(0)
    model = build_model(config, len(splits.class_names), splits.x_train.shape[1:])
    return train_model(config, model, splits, Run.create(work / name)).phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 45,000)")
    parser.add_argument("--epochs", type=int, default=2, help="phase-1 epochs in each configuration")
    args = parser.parse_args()
    data = load_dataset(DataConfig(source=args.data), seed=0, warn=lambda message: None)
    splits = make_splits(data, 5000, 0, args.train_limit)
    common = {"train.epochs": args.epochs}
    with tempfile.TemporaryDirectory() as work:
        uncached = timed_phases({**common, "vgg16.feature_cache": False, "vgg16.finetune_epochs": 1},
                                splits, Path(work), "uncached")
        cached = timed_phases({**common, "vgg16.feature_cache": True, "vgg16.unfreeze_blocks": 0},
                              splits, Path(work), "cached")
    head_uncached, finetune = uncached
    (head_cached,) = cached
    total_uncached = head_uncached["seconds_per_epoch"] * args.epochs
    total_cached = head_cached["feature_cache_seconds"] + head_cached["seconds_per_epoch"] * args.epochs
    print(f"{len(splits.y_train):,} training + {len(splits.y_val):,} validation images, 32 px, batch 32, "
          f"{machine.cpu_model()} x{machine.hardware()['cpu_cores']}")
    print(f"phase 1 without cache:  {head_uncached['seconds_per_epoch']:.1f} s per epoch")
    print(f"phase 1 with cache:     {head_cached['feature_cache_seconds']:.1f} s once for features, then "
          f"{head_cached['seconds_per_epoch']:.1f} s per epoch")
    print(f"phase 2 (block5 open), without cache: {finetune['seconds_per_epoch']:.1f} s per epoch")
    print(f"phase 1 over {args.epochs} epochs: {total_uncached:.1f} s uncached vs {total_cached:.1f} s cached, "
          f"speed-up {total_uncached / total_cached:.1f}x")


if __name__ == "__main__":
    main()
