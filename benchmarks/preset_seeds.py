"""A preset's test accuracy over several seeds, and the wall time of each whole run, as a user would see it.

    .venv/bin/python benchmarks/preset_seeds.py --preset fast --data PATH/TO/cifar-10-python.tar.gz --seeds 0 1 2

Each seed is one `cnnlab train` process, timed from its start to its exit: Python and Keras start-up, data loading,
training and the final test evaluation all count. Run directories go to runs/PRESET-seedS unless --out says where.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs"))
    parser.add_argument("extra", nargs="*", help="more cnnlab train options, after --")
    args = parser.parse_args()
    accuracies, minutes = [], []
    for seed in args.seeds:
        run_dir = args.out / f"{args.preset}-seed{seed}"
        command = [sys.executable, "-m", "cnnlab", "train", "--preset", args.preset, "--data", args.data,
                   "--seed", str(seed), "--out", str(run_dir), *args.extra]
        start = time.perf_counter()
        if subprocess.run(command).returncode:
            sys.exit(f"preset_seeds: seed {seed}: cnnlab train failed (its error is above); later seeds not run")
        minutes.append((time.perf_counter() - start) / 60)
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        accuracies.append(100 * metrics["test_accuracy"])
        print(f"seed {seed}: test accuracy {accuracies[-1]:.2f}%, wall time {minutes[-1]:.1f} min "
              f"(training {metrics['train_seconds'] / 60:.1f} min, test evaluation {metrics['test_seconds']:.0f} s)",
              flush=True)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"{args.preset}: {statistics.mean(accuracies):.2f}% +- {spread:.2f} (mean +- sd over {len(accuracies)} "
          f"seeds, min {min(accuracies):.2f}%), wall time {min(minutes):.1f}-{max(minutes):.1f} min per run")


if __name__ == "__main__":
    main()
