"""Transfer learning, measured: VGG16 from a pretrained trunk vs VGG16 from random weights vs the CNN from scratch.

    .venv/bin/python benchmarks/vgg16_transfer.py --data PATH/TO/cifar-10-python.tar.gz \
        --weights vgg16_hed_notop.weights.h5 --presets quick transfer --seeds 0 1 [--arms pretrained random cnn]

Every run is one `cnnlab train` process of the preset as a user runs it, timed from start to exit (start-up, data,
feature cache, training, test evaluation), on the same seeds and data; each arm trains as the preset says for its
model (the two VGG16 arms differ only in their starting weights). Finished runs are kept under --out and read back, not retrained, so a long series can be run
in pieces. The table gives the mean test accuracy over the seeds (with the standard deviation where there are two
or more) and the wall time; then, for the first seed of each preset, `cnnlab report` compares the arms and its
verdict paragraph (McNemar's test on the same test images) is printed as a user would read it.

The trunk in --weights is whatever file you pass; with the HED stand-in (benchmarks/hed_vgg16_weights.py) the
numbers are those of HED's BSDS500-tuned VGG16, never ImageNet results.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from preset_seeds import train_seed

ARMS = {  # name: (what the table calls it, cnnlab train options)
    "pretrained": ("VGG16 from the pretrained trunk", lambda weights: ["--model", "vgg16", "--weights", weights]),
    "random": ("VGG16 from random weights", lambda weights: ["--model", "vgg16", "--weights", "none"]),
    "cnn": ("CNN from scratch", lambda weights: ["--model", "cnn"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True, help="the pretrained VGG16 no-top file for the first arm")
    parser.add_argument("--presets", nargs="+", default=["quick", "transfer"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--out", type=Path, default=Path("runs/vgg16-transfer"))
    args = parser.parse_args()
    rows, verdicts = [], []
    for preset in args.presets:
        for arm in args.arms:
            label, options = ARMS[arm]
            results = [train_seed(preset, args.data, seed, args.out / preset / f"{arm}-seed{seed}",
                                  options(args.weights)) for seed in args.seeds]
            accuracies = [accuracy for accuracy, _, _ in results]
            spread = f" +- {statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
            minutes = statistics.mean(wall for _, wall, _ in results)
            rows.append(f"| {preset} | {label} | {', '.join(map(str, args.seeds))} | "
                        f"{statistics.mean(accuracies):.2f}{spread} | {minutes:.1f} |")
            print(rows[-1], flush=True)
        verdicts.append((preset, report_verdict([args.out / preset / f"{arm}-seed{args.seeds[0]}" for arm in args.arms],
                                          args.out / preset / f"report-seed{args.seeds[0]}-{'-'.join(args.arms)}")))
    print("\n| preset | model | seeds | test accuracy % (mean +- sd) | wall time per run, min |")
    print("|---|---|---|---:|---:|")
    print("\n".join(rows))
    for preset, paragraph in verdicts:
        print(f"\n{preset}, seed {args.seeds[0]}, as `cnnlab report` says it: {paragraph}")


def report_verdict(run_dirs: list[Path], out: Path) -> str:
    """The verdict paragraph of `cnnlab report` on these runs (the report is made once and then read back)."""
    report = out / "report.md"
    if not report.is_file() and len(run_dirs) > 1:
        command = [sys.executable, "-m", "cnnlab", "report", *map(str, run_dirs), "--out", str(out)]
        if subprocess.run(command).returncode:
            sys.exit("cnnlab report failed (its error is above)")
    if not report.is_file():
        return "(one arm: nothing to compare)"
    paragraphs = report.read_text(encoding="utf-8").split("\n\n")
    return next((p.strip() for p in paragraphs if "test accuracy against" in p), "(no verdict paragraph found)")


if __name__ == "__main__":
    main()
