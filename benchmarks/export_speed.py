"""Inference speed of a finished run's model in Keras and as each exported artifact, on this CPU, and their sizes.

    .venv/bin/python benchmarks/export_speed.py RUN_DIR [--formats savedmodel onnx litert] [--calls 200] [--rounds 5]

Each format is exported afresh (as `cnnlab export` does, by Keras's `model.export` from a float32 copy) into a
temporary folder, then every contender is timed in one process: at batch 1 (`--calls` single images, as a service
answering one request at a time) and at batch 256 (`--rounds` batches, as for scoring a folder). Keras runs
`predict_on_batch` on the model as loaded (its trained precision); each artifact runs in its own runtime as
`cnnlab export` checks it (TensorFlow, ONNX Runtime, LiteRT on all cores). One untimed warm-up call per batch size
first (tracing, allocation). Images are random: speed does not depend on their values.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def images_per_second(predict, images: np.ndarray, calls: int) -> float:
    predict(images)  # warm-up: tracing, allocation
    start = time.perf_counter()
    for _ in range(calls):
        predict(images)
    return calls * len(images) / (time.perf_counter() - start)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(item.stat().st_size for item in path.rglob("*")
                                                          if item.is_file())


def contenders(model, run, formats: list[str], folder: Path) -> dict[str, tuple]:
    """{name: (predict function, size in bytes)}: the Keras model, then each artifact exported into `folder`."""
    from cnnlab.serving.export import FORMATS, load_artifact, write_artifact

    found = {"keras": (model.predict_on_batch, size_of(run.model_path))}
    for format in formats:
        path = folder / FORMATS[format].file_name
        write_artifact(model, format, path, {"format": format})
        found[format] = (load_artifact(format, path), size_of(path))
    return found


def main() -> None:
    from cnnlab.serving.export import FORMATS  # light: TensorFlow loads with the model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--calls", type=int, default=200, help="timed single-image calls (default: 200)")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches of 256 (default: 5)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnlab.backends import import_keras, machine
    from cnnlab.runs.run import Run
    from cnnlab.serving.export import require_modules

    run = Run.open_finished(args.run_dir)
    for format in args.formats:
        require_modules(FORMATS[format].modules, f"{format} export")
    import_keras()
    model = run.load_model(run.settings().class_names)
    shape = model.input_shape[1:]
    rng = np.random.default_rng(0)
    batches = {size: rng.integers(0, 256, (size, *shape)).astype(np.float32) for size in (1, 256)}
    hardware = machine.hardware()
    print(f"{args.run_dir}: {hardware['cpu']}, {hardware['cpu_cores']} cores; input {shape}; batch 1: {args.calls} "
          f"calls, batch 256: {args.rounds} calls, each after one untimed call")
    print(f"{'model':<11} {'img/s batch 1':>14} {'img/s batch 256':>16} {'size MB':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for name, (predict, size) in contenders(model, run, args.formats, Path(folder)).items():
            single = images_per_second(predict, batches[1], args.calls)
            batched = images_per_second(predict, batches[256], args.rounds)
            print(f"{name:<11} {single:>14,.1f} {batched:>16,.1f} {size / 2**20:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
