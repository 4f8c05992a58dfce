"""The main job's wall time (`make run`: `cnnlab compare --preset quick`), this checkout against an earlier revision.

    .venv/bin/python benchmarks/main_job.py --data PATH/TO/cifar-10-python.tar.gz \
        --weights vgg16_notop.h5|none --before REV [--rounds 1] [--out runs/main-job]

Each round runs `python -m cnnlab compare --preset quick` once with the revision given by --before (checked out as a
detached git worktree under --out, put first on PYTHONPATH) and once with this checkout, alternating, each a fresh
process timed from start to exit. The table gives every run's wall time, where it went (each model's training and
test evaluation, from its metrics.json; the rest is start-up, data and the report), both models' test accuracy (the
report's numbers: a cut that changes them is not a speed-up), and the ratio of the total wall times.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "src"


def checkout(revision: str, folder: Path) -> Path:
    """The `src` folder of `revision`, checked out once into `folder` (kept for later rounds and reruns)."""
    if not folder.is_dir():
        made = subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(folder), revision],
                              capture_output=True, text=True)
        if made.returncode:
            sys.exit(f"main_job: cannot check out {revision!r}: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
    return folder / "src"


def run_main_job(source: Path, data: str, weights: str, out: Path) -> dict:
    """One `cnnlab compare --preset quick` process with `source` first on the path: its wall time and metrics."""
    environment = dict(os.environ, PYTHONPATH=str(source))
    command = [sys.executable, "-m", "cnnlab", "compare", "--preset", "quick", "--data", data, "--weights", weights,
               "--out", str(out)]
    start = time.perf_counter()
    if subprocess.run(command, env=environment).returncode:
        sys.exit(f"main_job: {' '.join(command)} failed (its error is above)")
    wall = time.perf_counter() - start
    metrics = {kind: json.loads((out / kind / "metrics.json").read_text(encoding="utf-8")) for kind in ("cnn", "vgg16")}
    return {"wall": wall, "metrics": metrics}


def row(name: str, result: dict) -> str:
    cnn, vgg16 = result["metrics"]["cnn"], result["metrics"]["vgg16"]
    inside = sum(each["train_seconds"] + each["test_seconds"] for each in (cnn, vgg16))
    return (f"| {name} | {result['wall'] / 60:.2f} | {cnn['train_seconds']:.0f} + {cnn['test_seconds']:.0f} | "
            f"{vgg16['train_seconds']:.0f} + {vgg16['test_seconds']:.0f} | {result['wall'] - inside:.0f} | "
            f"{100 * cnn['test_accuracy']:.2f} | {100 * vgg16['test_accuracy']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True, help="VGG16's weights for both contenders: a .h5 file or none")
    parser.add_argument("--before", required=True, help="the git revision to compare with, e.g. a commit hash")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/main-job"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    contenders = {f"before ({args.before})": checkout(args.before, args.out / "before-source"), "now": SOURCE}
    results = {name: [] for name in contenders}
    for round_number in range(args.rounds):
        for name, source in contenders.items():
            out = args.out / f"{name.split()[0]}-round{round_number}"
            results[name].append(run_main_job(source, args.data, args.weights, out))
            print(row(name, results[name][-1]), flush=True)
    print(summary(results))


def summary(results: dict[str, list[dict]]) -> str:
    """The table of every run, the earlier revision's first, and the ratio of their total wall times."""
    lines = ["| code | wall time, min | CNN train + test, s | VGG16 train + test, s | rest (start-up, data, report), s |"
             " CNN test acc % | VGG16 test acc % |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [row(name, each) for name, runs in results.items() for each in runs]
    before, now = (sum(each["wall"] for each in runs) for runs in results.values())
    rounds = len(next(iter(results.values())))
    lines.append(f"\nthe main job now takes {now / 60 / rounds:.2f} min against {before / 60 / rounds:.2f} min before "
                 f"(mean of {rounds} round(s), alternating): {before / now:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
