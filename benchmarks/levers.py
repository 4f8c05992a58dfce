"""Each speed lever of benchmarks/RESULTS.md's table, measured with the current code: training and evaluation img/s
of a preset's model, built, compiled and fed as cnnlab does, with only that lever changed.

    .venv/bin/python benchmarks/levers.py --data PATH [--images 3200] [--rounds 3] [--levers xla input ...]

Within a lever the variants alternate round by round (the order rotating), so a shared machine's drift treats them
alike; each variant's first round (tracing, compiling) is left out. Training: the preset's batches from the real
training images, augmentation as the preset sets it (its weight averaging left out); evaluation: `predict` on as
many test images (the evaluation-batch levers: 16 and 8 times as many, as their passes are short). One process: every model is built in it, so they share its threads.
"""

import argparse
import dataclasses
import sys

LEVERS = {
    "precision": [("float32", "seed", {"train.precision": "float32"}, {}),
                  ("bfloat16", "seed", {"train.precision": "bfloat16"}, {})],
    "steps_per_execution": [("1", "seed", {"train.steps_per_execution": 1}, {}),
                            ("8 (the presets')", "seed", {"train.steps_per_execution": 8}, {}),
                            ("16", "seed", {"train.steps_per_execution": 16}, {})],
    "input": [("tf.data (cnnlab on TensorFlow)", "seed", {}, {"feed": "tf.data"}),
              ("Keras PyDataset (cnnlab elsewhere)", "seed", {}, {"feed": "pydataset"}),
              ("NumPy arrays, float32", "seed", {}, {"feed": "numpy"})],
    "xla": [("off (cnnlab on a CPU)", "seed", {}, {}), ("on", "seed", {}, {"jit_compile": True})],
    "evaluation_batch": [(label, "seed", {}, {"eval_batch": size, "eval_images_per_train_image": 16})
                         for size, label in ((32, "32 (Keras's default)"), (128, "128"), (256, "256 (cnnlab)"))],
    # VGG16 `quick`'s evaluation stands for its feature cache (the frozen trunk's pass over the training images);
    # its training is slow, so this lever scores 8 test images per training image.
    "vgg16_feature_batch": [(label, "quick", {"model": "vgg16", "vgg16.weights": "none"},
                             {"eval_batch": size, "eval_images_per_train_image": 8})
                            for size, label in ((128, "128 (the feature cache's batch)"), (256, "256"))],
    # In the preset's precision ("auto": bfloat16 where the CPU has it natively), on each net cnnlab builds itself
    **{f"convolution_gradients_{preset}": [
        ("the backend's own kernels", preset, {"train.convolution_gradients": "backend"}, {}),
        ("forward convolutions (models/convolution.py)", preset, {"train.convolution_gradients": "convolutions"}, {})]
       for preset in ("seed", "fast")},
    # TensorFlow only: Keras's own Adam step undone on the optimizer that `TensorFlowEngine.fused` gave the fused one
    "adam_step": [("Keras's own", "seed", {}, {"adam": "keras"}),
                  ("TensorFlow's fused kernel (cnnlab on TensorFlow)", "seed", {}, {})],
    "activation": [("GELU (fast)", "fast", {"fastnet.activation": "gelu"}, {}),
                   ("ReLU (scratch)", "fast", {"fastnet.activation": "relu"}, {})],
}


@dataclasses.dataclass
class Variant:
    label: str
    train_seconds: list = dataclasses.field(default_factory=list)
    eval_seconds: list = dataclasses.field(default_factory=list)
    train_images: int = 0
    eval_images: int = 0

    def speeds(self) -> tuple[float, float]:
        return (self.train_images * (len(self.train_seconds) - 1) / sum(self.train_seconds[1:]),
                self.eval_images * (len(self.eval_seconds) - 1) / sum(self.eval_seconds[1:]))


def prepare(label, preset, overrides, how, data_source, images):
    """The variant's model, compiled, and its two timed jobs."""
    from cnnlab.backends import fit_input
    from cnnlab.config import load_config
    from cnnlab.data.batches import one_hot
    from cnnlab.evaluation.scoring import predict_probabilities
    from cnnlab.training.bench import preset_setup

    config = load_config(preset, {**overrides, "data.source": data_source})
    train = config.train
    count = max(images // train.batch_size, 2) * train.batch_size
    setup = preset_setup(config, count, total_steps=100 * count // train.batch_size,
                         test_count=count * how.get("eval_images_per_train_image", 1))
    model, batches, x_test = setup.model, setup.batches, setup.x_test
    if how.get("adam") == "keras":
        vars(model.optimizer).pop("update_step", None)  # the class's step again, before the first fit traces it
    if how.get("jit_compile"):
        model.jit_compile = True  # before the first fit, which builds the train function
    feed = how.get("feed", "tf.data")
    if feed == "numpy":
        x_float, y_hot = setup.x_train.astype("float32"), one_hot(setup.y_train, setup.num_classes)

        def train_job():
            model.fit(x_float, y_hot, batch_size=train.batch_size, epochs=1, verbose=0, shuffle=False)
    else:
        def train_job():
            source, callbacks = fit_input(batches) if feed == "tf.data" else (batches, [])
            model.fit(source, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
            batches.on_epoch_end()

    def eval_job():
        predict_probabilities(model, x_test, batch_size=how.get("eval_batch", 256))

    return Variant(label, train_images=len(setup.y_train), eval_images=len(x_test)), train_job, eval_job


def measure(lever: str, data_source: str, images: int, rounds: int, log=print) -> list[Variant]:
    from cnnlab.training.bench import alternate_rounds

    entries = [prepare(*variant, data_source, images) for variant in LEVERS[lever]]
    alternate_rounds(entries, rounds, log, name=f"{lever}: round")
    return [variant for variant, _, _ in entries]


def format_lever(lever: str, variants: list[Variant]) -> str:
    base_train, base_eval = variants[0].speeds()
    lines = [f"{lever}:", "| variant | train img/s | ratio | eval img/s | ratio |", "|---|---:|---:|---:|---:|"]
    for variant in variants:
        train, evaluate = variant.speeds()
        lines.append(f"| {variant.label} | {train:,.0f} | {train / base_train:.2f}x | {evaluate:,.0f} | "
                     f"{evaluate / base_eval:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="cifar-10-python.tar.gz")
    parser.add_argument("--images", type=int, default=3200, help="training images per round (test images: as many, or the lever's multiple)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, after one warm-up round")
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    args = parser.parse_args(argv)
    if args.images < 1 or args.rounds < 1:
        parser.error("--images and --rounds must be at least 1")
    for lever in args.levers:
        variants = measure(lever, args.data, args.images, args.rounds, log=lambda line: print(line, file=sys.stderr))
        print(format_lever(lever, variants), flush=True)


if __name__ == "__main__":
    main()
