"""Transfer from a real ImageNet backbone, measured: EfficientNet-Lite0 from its ImageNet weights vs the same net from
random weights vs the seed CNN from scratch vs VGG16 on the HED stand-in trunk, under one preset.

    .venv/bin/python benchmarks/backbones.py --data PATH/TO/cifar-10-python.tar.gz --preset quick --seeds 0 1 \
        [--vgg16-weights vgg16_hed_notop.weights.h5] [--arms lite0 lite0-random cnn vgg16-hed]
    .venv/bin/python benchmarks/backbones.py --data ... --select     # the choice of size, cut and fine-tuning

Every run is one `cnnlab train` process as a user runs it, timed from start to exit (start-up, data, feature cache,
training, test evaluation); finished runs under --out are read back, not retrained. Each row gives the test
accuracy of each seed, their mean and sd, the wall time, and the forward cost of one image through the model
(multiply-adds of its convolutions and dense layers, x2: FLOPs), counted from the built model.

--select chooses EfficientNet-Lite0's image size, cut (top block) and fine-tuning on the validation split alone
(5,000 images held out of the training set), training on 10,000 images; it prints the best validation accuracy of
each setting (the test set of these runs is a 1,000-image sample and is not read). The HED stand-in's numbers are
those of HED's edge-tuned VGG16, never ImageNet results; EfficientNet-Lite0's weights are ImageNet's.
"""

import argparse
import statistics
from pathlib import Path

from cnnlab.runs.run import Run
from preset_seeds import train_seed
from vgg16_transfer import report_verdict

ARMS = {  # name: (what the table calls it, cnnlab train options)
    "lite0": ("EfficientNet-Lite0 from ImageNet weights", lambda args: ["--model", "efficientnet_lite0"]),
    "lite0-random": ("EfficientNet-Lite0 from random weights",
                     lambda args: ["--model", "efficientnet_lite0", "--weights", "none"]),
    "cnn": ("CNN from scratch", lambda args: ["--model", "cnn"]),
    "vgg16-hed": ("VGG16 on the HED stand-in trunk (not ImageNet)",
                  lambda args: ["--model", "vgg16", "--weights", args.vgg16_weights]),
}
LITE = "efficientnet_lite0"
# The settings --select compares, each on top of the preset: (name, cnnlab train options)
CHOICES = [
    ("64 px, head on block 5", ["--backbone-size", "64"]),
    ("96 px, head on block 5", ["--backbone-size", "96"]),
    ("128 px, head on block 5", ["--backbone-size", "128"]),
    ("96 px, head on block 4", ["--backbone-size", "96", "--set", f"{LITE}.top_block=4"]),
    ("160 px, head on block 5", ["--backbone-size", "160"]),
    ("96 px, block 5 fine-tuned 2 epochs", ["--backbone-size", "96", "--set", f"{LITE}.unfreeze_blocks=1",
                                            "--set", f"{LITE}.finetune_epochs=2"]),
    ("96 px, block 5 fine-tuned 2 epochs at lr 1e-4", ["--backbone-size", "96", "--set", f"{LITE}.unfreeze_blocks=1",
                                                       "--set", f"{LITE}.finetune_epochs=2", "--set",
                                                       f"{LITE}.finetune_learning_rate=1e-4"]),
    ("96 px, head dense 256", ["--backbone-size", "96", "--set", f"{LITE}.head_units=[256]"]),
]


def forward_flops(run_dir: Path) -> float:
    """FLOPs of one image through the run's model: 2 x the multiply-adds of every convolution and dense layer."""
    import keras

    from cnnlab.runs.run import load_run_model

    def flops(model) -> float:
        total = 0.0
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                total += flops(layer)
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
                output = layer.output.shape[1:-1]
                positions = 1 if isinstance(layer, keras.layers.Dense) else output[0] * output[1]
                total += 2 * positions * float(sum(weight.numpy().size for weight in layer.weights[:1]))
        return total

    return flops(load_run_model(run_dir))


def select(args) -> None:
    print("| setting | best validation accuracy | wall time, min |\n|---|---:|---:|")
    for name, options in CHOICES:
        run_dir = args.out / "select" / name.replace(" ", "-").replace(",", "")
        _, minutes, _ = train_seed(args.preset, args.data, 0, run_dir, ["--model", LITE, "--train-limit", "10000",
                                                                       "--test-limit", "1000", *options])
        best = max(Run(run_dir).history()["val_accuracy"])
        print(f"| {name} | {best:.2%} | {minutes:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--vgg16-weights", default="vgg16_hed_notop.weights.h5")
    parser.add_argument("--select", action="store_true", help="choose Lite0's size, cut and fine-tuning instead")
    parser.add_argument("--out", type=Path, default=Path("runs/backbones"))
    args = parser.parse_args()
    if args.select:
        return select(args)
    rows = []
    for arm in args.arms:
        label, options = ARMS[arm]
        run_dirs = [args.out / args.preset / f"{arm}-seed{seed}" for seed in args.seeds]
        results = [train_seed(args.preset, args.data, seed, run_dir, options(args))
                   for seed, run_dir in zip(args.seeds, run_dirs)]
        accuracies = [accuracy for accuracy, _, _ in results]
        spread = f"{statistics.mean(accuracies):.2f}" + (f" ± {statistics.stdev(accuracies):.2f}"
                                                          if len(accuracies) > 1 else "")
        minutes = ", ".join(f"{wall:.1f}" for _, wall, _ in results)
        rows.append(f"| {label} | {', '.join(f'{a:.2f}%' for a in accuracies)} | {spread} | {minutes} | "
                    f"{forward_flops(run_dirs[0]) / 1e9:.3f} |")
        print(rows[-1], flush=True)
    print(f"\npreset {args.preset}, seeds {args.seeds}")
    print("| model | test accuracy, each seed | mean ± sd, % | wall time per run, min | GFLOP per image (forward) |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    paragraph = report_verdict([args.out / args.preset / f"{arm}-seed{args.seeds[0]}" for arm in args.arms],
                         args.out / args.preset / f"report-seed{args.seeds[0]}")
    print(f"\nseed {args.seeds[0]}, as `cnnlab report` says it: {paragraph}")


if __name__ == "__main__":
    main()
