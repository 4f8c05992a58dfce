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


def train_seed(preset: str, data: str, seed: int, run_dir: Path, extra: list[str]) -> tuple[float, float, dict]:
    """One `cnnlab train` process: test accuracy (%), wall time (minutes) and its metrics.json. A run directory that
    already holds a run this same command finished is read, not trained again (a long series can be run in pieces);
    any other run there makes `cnnlab train` refuse the folder, as it refuses any non-empty one."""
    arguments = ["train", "--preset", preset, "--data", data, "--seed", str(seed), "--out", str(run_dir), *extra]
    record_file, metrics_file = run_dir / "benchmark_run.json", run_dir / "metrics.json"
    if record_file.is_file() and metrics_file.is_file():
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record["arguments"] == arguments:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            return 100 * metrics["test_accuracy"], record["wall_minutes"], metrics
    start = time.perf_counter()
    if subprocess.run([sys.executable, "-m", "cnnlab", *arguments]).returncode:
        sys.exit(f"{Path(sys.argv[0]).stem}: seed {seed}: cnnlab train failed (its error is above); later runs not run")
    minutes = (time.perf_counter() - start) / 60
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    record_file.write_text(json.dumps({"arguments": arguments, "wall_minutes": minutes}), encoding="utf-8")
    return 100 * metrics["test_accuracy"], minutes, metrics


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
        accuracy, wall, metrics = train_seed(args.preset, args.data, seed, args.out / f"{args.preset}-seed{seed}",
                                             args.extra)
        accuracies.append(accuracy)
        minutes.append(wall)
        print(f"seed {seed}: test accuracy {accuracies[-1]:.2f}%, wall time {minutes[-1]:.1f} min "
              f"(training {metrics['train_seconds'] / 60:.1f} min, test evaluation {metrics['test_seconds']:.0f} s)",
              flush=True)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"{args.preset}: {statistics.mean(accuracies):.2f}% +- {spread:.2f} (mean +- sd over {len(accuracies)} "
          f"seeds, min {min(accuracies):.2f}%), wall time {min(minutes):.1f}-{max(minutes):.1f} min per run")


if __name__ == "__main__":
    main()
