"""Where the CPU path loses, and which settings win on this machine: training and evaluation img/s of the seed CNN
(and, with --presets, the fast net) through cnnlab's pipeline, with one process-wide setting changed at a time.

    .venv/bin/python benchmarks/cpu_settings.py --data PATH [--precisions float32 bfloat16] [--presets seed]
        [--steps 100] [--rounds 2] [--variants default threads-1-1 ...]

The settings only a fresh process can change: TensorFlow's intra-op and inter-op thread pools (TF_NUM_INTRAOP_THREADS,
TF_NUM_INTEROP_THREADS), oneDNN on or off (TF_ENABLE_ONEDNN_OPTS), XLA, and the Keras backend (JAX, PyTorch). So each
variant is a fresh `python benchmarks/cpu_settings.py --child` process, which times the preset's model as `cnnlab
bench --backend` does (`training.bench.time_presets`: a warm-up round, then `--rounds` timed rounds of `--steps`
batches and as many test images). The variants run in turn, `--repeats` times, in an order that rotates each time, so
a shared machine's drift treats them alike; each variant's rate is the mean over its repeats, and its ratio is to the
`default` variant (what cnnlab does today) of the same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from cnnlab.common.cores import usable_cores

VARIANTS = {
    # name: (what it changes, environment, XLA on)
    "default": ("cnnlab's settings: TensorFlow with its own thread pools (one thread per core in each), oneDNN on, "
                "XLA off", {}, False),
    "inter1": ("one inter-op thread", {"TF_NUM_INTEROP_THREADS": "1"}, False),
    "intra1-inter1": ("one intra-op thread, one inter-op thread",
                      {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}, False),
    "intra1-inter2": ("one intra-op thread, inter-op threads = cores",
                      {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": str(usable_cores())}, False),
    "onednn-off": ("TensorFlow's own kernels instead of oneDNN's", {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),
    # TensorFlow's oneDNN switches (read from its libraries' strings): the thread that asks for a oneDNN kernel works
    # on it too; oneDNN's scratch memory from the system allocator; oneDNN primitives that TensorFlow rebuilds at each
    # call to save memory (the gradient kernels', and forward ones for batches over 32) cached instead
    "onednn-caller-thread": ("oneDNN's kernels also run on the calling thread",
                             {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "1"}, False),
    "onednn-system-allocator": ("oneDNN's memory from the system allocator", {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"},
                                False),
    "onednn-primitive-memory": ("oneDNN primitives cached that TensorFlow rebuilds each call to save memory",
                                {"TF_MKL_OPTIMIZE_PRIMITIVE_MEMUSE": "0"}, False),
    "xla": ("XLA on (jit_compile=True)", {}, True),
    "jax": ("the JAX backend (XLA, as Keras runs it there)", {"KERAS_BACKEND": "jax"}, False),
    "torch": ("the PyTorch backend", {"KERAS_BACKEND": "torch"}, False),
}


def child(request: dict) -> list[dict]:
    """The rows of `time_presets` for this process's settings."""
    import dataclasses

    from cnnlab.backends import import_keras

    import_keras()
    if request["xla"]:
        # Only for this measurement: cnnlab keeps XLA off on a CPU under TensorFlow (backends/tensorflow.py).
        from cnnlab.backends.tensorflow import ENGINE
        ENGINE.jit_compile = lambda device_kind: True
    from cnnlab.training.bench import time_presets

    rows = time_presets(request["overrides"], request["steps"], request["rounds"], presets=request["presets"],
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    return [dataclasses.asdict(row) for row in rows]


def run_variant(name: str, request: dict) -> list[dict]:
    _, environment, xla = VARIANTS[name]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", **environment}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps({**request, "xla": xla})], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no message"]
        print(f"{name}: failed: {last[0]}", file=sys.stderr)
        return []
    return json.loads(done.stdout)


def measure(names, request: dict, repeats: int) -> dict[str, list[list[dict]]]:
    runs = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            print(f"repeat {repeat + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            runs[name].append(run_variant(name, request))
    return runs


def summary(runs: dict[str, list[list[dict]]]) -> list[dict]:
    """One line per variant and preset: mean img/s over the repeats, and the ratio to `default`'s."""
    lines = []
    for name, repeats in runs.items():
        for rows in zip(*[repeat for repeat in repeats if repeat]):
            train = statistics.mean(row["train_images_per_second"] for row in rows)
            evaluate = statistics.mean(row["eval_images_per_second"] for row in rows)
            gflops = statistics.mean(row["train_gflops_per_second"] for row in rows)
            lines.append({"variant": name, "preset": rows[0]["preset"], "model": rows[0]["model"],
                          "train_images_per_second": round(train, 1), "eval_images_per_second": round(evaluate, 1),
                          "train_gflops_per_second": round(gflops, 1),
                          "peak_gflops_per_second": round(rows[0]["peak_gflops_per_second"], 1),
                          "each_train": [round(row["train_images_per_second"], 1) for row in rows]})
    base = {line["preset"]: line for line in lines if line["variant"] == "default"}
    for line in lines:
        reference = base.get(line["preset"])
        if reference:
            for rate in ("train", "eval"):
                key = f"{rate}_images_per_second"
                line[f"{rate}_ratio"] = round(line[key] / reference[key], 3)
    return lines


def format_summary(precision: str, lines: list[dict]) -> str:
    out = [f"precision {precision}:",
           "| variant | preset | train img/s | ratio | eval img/s | ratio | train GFLOP/s | of peak |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for line in lines:
        out.append(f"| {line['variant']} | {line['preset']} | {line['train_images_per_second']:,.0f} | "
                   f"{line.get('train_ratio', float('nan')):.2f}x | {line['eval_images_per_second']:,.0f} | "
                   f"{line.get('eval_ratio', float('nan')):.2f}x | {line['train_gflops_per_second']:,.1f} | "
                   f"{line['train_gflops_per_second'] / line['peak_gflops_per_second']:.0%} |")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="cifar-10-python.tar.gz")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--presets", nargs="+", default=["seed"], choices=["seed", "fast"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=100, help="training batches per timed round")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds in each process, after a warm-up round")
    parser.add_argument("--repeats", type=int, default=2, help="processes per variant")
    parser.add_argument("--json", help="write the summary here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not args.data:
        parser.error("--data is required")
    names = ["default"] + [name for name in args.variants if name != "default"]
    results = {}
    for precision in args.precisions:
        request = {"overrides": {"data.source": args.data, "train.precision": precision}, "steps": args.steps,
                   "rounds": args.rounds, "presets": args.presets}
        results[precision] = summary(measure(names, request, args.repeats))
        print(format_summary(precision, results[precision]), flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"variants": {name: VARIANTS[name][0] for name in names}, "steps": args.steps,
                       "rounds": args.rounds, "repeats": args.repeats, "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
