"""The main job's wall time (`make run`: `cnnlab compare --preset quick`), this checkout against an earlier revision.

    .venv/bin/python benchmarks/main_job.py --data PATH/TO/cifar-10-python.tar.gz \
        --weights vgg16_notop.h5|none --before REV [--rounds 1] [--out runs/main-job]

Each round runs `python -m cnnlab compare --preset quick` once with the revision given by --before (checked out as a
detached git worktree under --out, put first on PYTHONPATH, and checked to be what the child imports) and once with
this checkout, each a fresh process timed from start to exit; who goes first alternates from round to round. --out
must not hold runs of an earlier call (compare refuses a used folder); remove its worktree after with
`git worktree remove OUT/before-source`. The table gives every run's wall time, where it went (each model's
training and test evaluation, from its metrics.json; the rest is start-up, data and the report), both models' test
accuracy (the report's numbers: a cut that changes them is not a speed-up), and the ratio of the total wall times.
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


def git(*arguments: str, where: Path = HERE.parent) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(where), *arguments], capture_output=True, text=True)


def checkout(revision: str, folder: Path) -> Path:
    """The `src` folder of `revision`, checked out into `folder` (an absolute path) as a detached git worktree; a
    folder already holding that revision is reused, one holding another is refused."""
    wanted = git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").stdout.strip()
    if not wanted:
        sys.exit(f"main_job: cannot check out {revision!r}: git knows no such commit")
    if not folder.is_dir():
        made = git("worktree", "add", "--detach", str(folder), wanted)
        if made.returncode:
            sys.exit(f"main_job: cannot check out {revision!r}: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
    elif git("rev-parse", "HEAD", where=folder).stdout.strip() != wanted:
        sys.exit(f"main_job: {folder} holds another revision than {revision!r}; remove it (git worktree remove) or "
                 "choose another --out")
    return folder / "src"


def child_environment(source: Path) -> dict:
    """This environment with `source` first on PYTHONPATH (ahead of the editable install's .pth), checked: a child
    that would import cnnlab from anywhere else stops the benchmark."""
    paths = [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    found = subprocess.run([sys.executable, "-c", "import cnnlab; print(cnnlab.__file__)"], env=environment,
                           capture_output=True, text=True).stdout.strip()
    if Path(found).resolve().parent.parent != source.resolve():
        sys.exit(f"main_job: a child process imports cnnlab from {found or 'nowhere'}, not from {source}")
    return environment


def run_main_job(environment: dict, data: str, weights: str, out: Path) -> dict:
    """One `cnnlab compare --preset quick` process in `environment`: its wall time and its runs' metrics."""
    command = [sys.executable, "-m", "cnnlab", "compare", "--preset", "quick", "--data", data, "--weights", weights,
               "--out", str(out)]
    start = time.perf_counter()
    if subprocess.run(command, env=environment).returncode:
        sys.exit(f"main_job: {' '.join(command)} failed (its error is above)")
    wall = time.perf_counter() - start
    try:
        metrics = {kind: json.loads((out / kind / "metrics.json").read_text(encoding="utf-8"))
                   for kind in ("cnn", "vgg16")}
    except (OSError, ValueError) as exc:
        sys.exit(f"main_job: {out}: no readable metrics.json ({exc})")
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
    out = args.out.resolve()
    contenders = {f"before ({args.before})": child_environment(checkout(args.before, out / "before-source")),
                  "now": child_environment(SOURCE)}
    results = {name: [] for name in contenders}
    names = list(contenders)
    for round_number in range(args.rounds):
        for name in names[round_number % 2:] + names[:round_number % 2]:  # who goes first alternates by round
            run_dir = out / f"{name.split()[0]}-round{round_number}"
            results[name].append(run_main_job(contenders[name], args.data, args.weights, run_dir))
            print(f"done: {row(name, results[name][-1])}", file=sys.stderr, flush=True)
    print(summary(results))


def summary(results: dict[str, list[dict]]) -> str:
    """The table of every run, the earlier revision's first, and the ratio of their total wall times."""
    lines = ["| code | wall time, min | CNN train + test, s | VGG16 train + test, s | rest (start-up, data, report), "
             "s | CNN test acc % | VGG16 test acc % |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [row(name, each) for name, runs in results.items() for each in runs]
    before, now = (sum(each["wall"] for each in runs) for runs in results.values())
    rounds = len(next(iter(results.values())))
    lines.append(f"\nthe main job now takes {now / 60 / rounds:.2f} min against {before / 60 / rounds:.2f} min before "
                 f"(mean of {rounds} round(s), alternating): {before / now:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
