"""Shared fixtures: tiny-but-valid synthetic CIFAR-10 archives in the official layout, and a trained tiny run.

The synthetic set has the official shapes (5 x 10,000 training and 10,000 test images) because cnnlab validates
them; its images are a per-class colour plus a little texture, so a small model learns them in one epoch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Fuzz tests: a fixed, repeatable example budget per fuzzer, 25 in the default tier (`make test`), 100 in the full
# tier (`make test-full` sets HYPOTHESIS_PROFILE=full); HYPOTHESIS_PROFILE=long, 5,000 random ones, for the longer
# runs that docs/reliability.md records.
QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("default", max_examples=25, deadline=None, derandomize=True, suppress_health_check=QUIET)
settings.register_profile("full", max_examples=100, deadline=None, derandomize=True, suppress_health_check=QUIET)
settings.register_profile("long", max_examples=5000, deadline=None, derandomize=False, suppress_health_check=QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# The real data set: $CNNLAB_DATA, else the copy the CI machine keeps beside the clone. Read before any fixture runs.
REAL_DATA = Path(os.environ.get("CNNLAB_DATA") or Path(__file__).resolve().parents[2] / "shared/datasets/cifar-10-python.tar.gz")
TINY_MODEL = ["--set", "cnn.conv_blocks=[[8], [16]]", "--set", "cnn.dense_units=[32]"]
# VGG16 up to block 2, fine-tuning block 2 on cached block-1 features: both phases and the cache, at a fraction of the
# cost of five blocks. The head's input is normalised, as the transfer preset's: on random weights' features an
# unnormalised head starts with huge logits, its ReLUs die in the first epoch and nothing is learnt after.
TINY_VGG16 = ["--weights", "none", "--set", "vgg16.head_units=[16]", "--set", "vgg16.finetune_epochs=1",
              "--set", "vgg16.unfreeze_blocks=1", "--set", "vgg16.top_block=2", "--set", "vgg16.head_batch_norm=true"]
# float32: "auto" picks bfloat16 on CPUs with native bfloat16, and tests compare numbers closely
FLOAT32 = ["--set", "train.precision=float32"]
# 1,000 of the synthetic set's 10,000 test images (class-stratified): a tiny run's test passes cost a tenth
TEST_LIMIT = ["--test-limit", "1000"]
# What every tiny run trains and is scored on: the synthetic classes are colours, learnt in an epoch or two
TINY_DATA = ["--epochs", "1", "--train-limit", "1000", "--val-size", "200", *TEST_LIMIT]

# Each model kind (cnnlab.models.KINDS) made tiny: a preset and the settings that shrink it. A new kind adds its line
# here (test_models checks that every kind has one), and every test that runs each kind trains it.
TINY_KINDS = {
    "cnn": ["--preset", "seed", *TINY_MODEL],
    "vgg16": ["--preset", "seed", "--model", "vgg16", *TINY_VGG16],
    "fastnet": ["--preset", "fast", "--set", "fastnet.widths=[8, 16, 16]", "--batch-size", "128"],
}


def tiny_backbone(name: str) -> list[str]:
    """A pretrained backbone's kind made tiny as VGG16 is: random weights, 32 px, cut after block 2, block 2
    fine-tuned on cached block-1 features, a normalised linear head."""
    return ["--preset", "seed", "--model", name, "--weights", "none", "--backbone-size", "32",
            *(item for setting in ("top_block=2", "unfreeze_blocks=1", "finetune_epochs=1", "head_batch_norm=true")
              for item in ("--set", f"{name}.{setting}"))]


TINY_KINDS.update({name: tiny_backbone(name) for name in ("efficientnet_lite0", "vgg19", "resnet50v2",
                                                          "mobilenetv3small", "mobilenetv3large", "efficientnetv2b0",
                                                          "convnexttiny", "densenet121")})
# The kinds every tier trains end to end: the nets from scratch, VGG16, EfficientNet-Lite0 (the ImageNet backbone
# cnnlab converts itself) and MobileNetV3Small (a Keras Application that normalises inside and has batch norms); the
# full tier (`make test-full`) runs the other backbones through the same tests.
DEFAULT_TIER_KINDS = ("cnn", "vgg16", "fastnet", "efficientnet_lite0", "mobilenetv3small")


def kind_params(kinds=None) -> list:
    """`kinds` (default: every kind of TINY_KINDS) as pytest parameters, those outside DEFAULT_TIER_KINDS marked
    slow."""
    return [kind if kind in DEFAULT_TIER_KINDS else pytest.param(kind, marks=pytest.mark.slow)
            for kind in kinds or TINY_KINDS]
# Tiny runs, as `python -m cnnlab train` makes them (the `kind_runs` fixture): each kind in float32, and variants;
# later flags win.
KIND_RUNS = {
    **{kind: [*settings, *FLOAT32] for kind, settings in TINY_KINDS.items()},
    "cnn": [*TINY_KINDS["cnn"], *FLOAT32, "--epochs", "2", "--val-size", "500"],
    "cnn-bfloat16": [*TINY_KINDS["cnn"], "--set", "train.precision=bfloat16"],
    # The seed preset's VGG16 as it is (five blocks, no normalisation before the head), narrow head: the full tier's
    "vgg16-seed": ["--preset", "seed", "--model", "vgg16", "--weights", "none", "--set", "vgg16.head_units=[16]",
                   "--set", "vgg16.finetune_epochs=1", *FLOAT32],
    # The middle preset's VGG16 (head on cached block-4 features, normalised), at 32 px to keep the test short.
    "vgg16-transfer": ["--preset", "transfer", "--model", "vgg16", "--weights", "none", "--vgg16-size", "32",
                       "--set", "vgg16.head_units=[16]", "--set", "vgg16.head_epochs=1", *FLOAT32],
}


def _load_benchmark(name: str):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One free-port probe and one `cnnlab serve` starter for the tests and benchmarks/serve_load.py alike: theirs.
_serve_load = _load_benchmark("serve_load")
free_port, served, ServerFailed = _serve_load.free_port, _serve_load.served, _serve_load.ServerFailed


# Any JSON document: what a tampered run-directory file can hold.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)


def run_cnnlab(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m cnnlab ARGS` in a fresh process, as a user runs it: nothing imported by the tests helps it."""
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


def run_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def assert_evaluate_reproduces_the_recorded_scores(run_dir: Path) -> None:
    """`python -m cnnlab evaluate RUN_DIR`, in a fresh process, prints the test accuracy and loss the run recorded."""
    recorded = run_metrics(run_dir)
    done = run_cnnlab("evaluate", run_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (f"test accuracy {recorded['test_accuracy']:.4f}, "
                                           f"test loss {recorded['test_loss']:.4f}")


def batch_payload(seed: int, images: int = 10_000, dtype=np.uint8, labels=None, **extra) -> bytes:
    """A pickled batch dict shaped like the official ones (bytes keys, channel-first rows)."""
    rng = np.random.default_rng(seed)
    classes = np.arange(images) % 10
    if labels is None:
        labels = classes.tolist()
    colours = np.random.default_rng(42).integers(0, 240, (10, 3)).astype(np.uint8)  # a distinct colour per class
    texture = rng.integers(0, 16, size=(16, 3072), dtype=np.uint8)  # few distinct rows: compresses well
    data = np.repeat(colours[classes], 1024, axis=1) + texture[np.arange(images) % 16]
    payload = {b"batch_label": b"synthetic", b"labels": labels, b"data": data.astype(dtype), b"filenames": []}
    payload.update(extra)
    return pickle.dumps(payload, protocol=2)


def python2_batch_payload(images: int = 3) -> bytes:
    """A batch written the way the official files are (cPickle, protocol 2: SHORT_BINSTRING keys, BINSTRING data,
    `numpy.core.multiarray`), opcode for opcode as `pickletools.dis` shows data_batch_1, for `images` rows."""
    labels = b"".join(b"K" + bytes([index % 10]) for index in range(images))  # BININT1 per label
    data = bytes(range(256)) * (images * 3072 // 256)
    return b"".join([
        b"\x80\x02}(U\x06labels]", b"(" + labels + b"e" if images else b"",
        b"U\x04data", b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R",
        b"(K\x01M" + struct.pack("<H", images) + b"M\x00\x0c\x86",  # state: version 1, shape (images, 3072)
        b"cnumpy\ndtype\nU\x02u1\x89\x88\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T" + struct.pack("<I", len(data)) + data + b"tb",  # C order, the raw bytes; BUILD
        b"u.",
    ])


def meta_payload(names=CLASS_NAMES) -> bytes:
    return pickle.dumps({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, protocol=2)


class ArrayForm:
    """Pickles the way numpy pickles an array, `_reconstruct(ndarray, (0,), b"b")` then BUILD, with any state: for
    crafting the hostile arrays the safe unpickler must refuse."""

    def __init__(self, state, arguments=(np.ndarray, (0,), b"b")):
        self.state, self.arguments = state, arguments

    def __reduce__(self):
        return np.ndarray.__reduce__(np.empty(0))[0], self.arguments, self.state


def array_state(shape, dtype, data, fortran_order=False) -> tuple:
    return (1, shape, np.dtype(dtype), fortran_order, data)


def run_in_limited_child(script: str, *args, stdin: bytes = b"") -> str:
    """Run Python `script` in a fresh process limited to 2 GiB of address space, so that input which would crash
    the interpreter or ask for gigabytes fails the calling test instead of killing pytest or the machine."""
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))\n"
    child = subprocess.run([sys.executable, "-c", limit + script, *map(str, args)], input=stdin,
                           capture_output=True, timeout=120)
    assert child.returncode == 0, f"child exited with {child.returncode}: {child.stderr.decode()[-500:]}"
    return child.stdout.decode().strip()


def official_files() -> dict[str, bytes]:
    files = {name: batch_payload(seed) for seed, name in enumerate(BATCH_NAMES)}
    files["batches.meta"] = meta_payload()
    return files


def write_archive(path: Path, files: dict[str, bytes], folder: str = "cifar-10-batches-py") -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}" if folder else name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def write_folder(path: Path, files: dict[str, bytes | Path]) -> Path:
    """Write an extracted-layout folder; a Path value is hard-linked instead of copied, to keep tests fast (a symbolic
    link leaving the folder would be refused)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            os.link(content, path / name)
        else:
            (path / name).write_bytes(content)
    return path


def learnable_splits(train: int = 600, val: int = 200, test: int = 200, classes: int = 10):
    """In-memory splits whose images are a class colour plus noise: a tiny CNN learns them in an epoch or two."""
    from cnnlab.data import Splits

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (classes, 3))

    def part(count):
        labels = rng.integers(0, classes, count).astype(np.uint8)
        noise = rng.integers(-30, 30, (count, 32, 32, 3))
        return np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = part(train), part(val), part(test)
    names = tuple(f"class{i}" for i in range(classes))
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, names)


@pytest.fixture(scope="session")
def good_files() -> dict[str, bytes]:
    return official_files()


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory, good_files) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz", good_files)


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory, good_files) -> Path:
    return write_folder(tmp_path_factory.mktemp("extracted") / "cifar-10-batches-py", good_files)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test reads the user's cache or data settings, and all share one decoded-array cache."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


class KindRuns(dict):
    """{kind: run directory}, each kind of KIND_RUNS trained by `python -m cnnlab train` when a test first asks for it
    (a test selected alone trains one), then shared by every test file: tests only read these runs; a test that
    writes (re-scores, exports into the run) works on a copy (`run_copy`, `copy_of`)."""

    def __init__(self, root: Path, archive: Path):
        super().__init__()
        self.root, self.archive = root, archive

    def __missing__(self, kind: str) -> Path:
        done = run_cnnlab("train", "--data", self.archive, *TINY_DATA, *KIND_RUNS[kind], "--out", self.root / kind)
        assert done.returncode == 0, done.stderr
        self[kind] = self.root / kind
        return self[kind]


@pytest.fixture(scope="session")
def kind_runs(tmp_path_factory, synthetic_archive) -> KindRuns:
    return KindRuns(tmp_path_factory.mktemp("kind-runs"), synthetic_archive)


@pytest.fixture(scope="session")
def trained_run(kind_runs) -> Path:
    """The finished run of a tiny CNN on the synthetic set (float32, 2 epochs) that the evaluate, predict, export,
    serve and CLI tests share; they read it, or work on a copy (`run_copy`)."""
    return kind_runs["cnn"]


def copy_of(run_dir: Path, folder: Path) -> Path:
    """A copy of a shared run in `folder`, for a test that writes into it (the copy keeps the run's folder name)."""
    return Path(shutil.copytree(run_dir, folder / Path(run_dir).name))


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the shared tiny CNN run, so that what a test writes into it changes nothing another test reads."""
    return copy_of(trained_run, tmp_path / "copy")


def answers_of_run(run_dir: Path, images: list[Path], k: int = 1) -> list[dict]:
    """What `cnnlab predict RUN_DIR IMAGES` answers, computed in this process: the run's model as loaded, its classes,
    resize mode and test-time augmentation."""
    from cnnlab.runs.run import load_run_model
    from cnnlab.runs.run import Run
    from cnnlab.serving.predict import predict_images

    settings = Run.open_finished(run_dir).settings()
    return predict_images(load_run_model(run_dir), images, settings.class_names, k, settings.augmentation,
                          settings.resize)


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, which `make test` installs where apt-get can."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (`make test` installs it where apt-get can)")
    return path


def launch_chromium(playwright, executable: str, profile: Path, viewport=(1200, 900)):
    """Headless Chromium (the `chromium` fixture's) with a fresh profile and nothing of its own on the network."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=executable, headless=True,
        viewport={"width": viewport[0], "height": viewport[1]},
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--no-first-run", "--disable-sync"],
    )


@pytest.fixture(scope="session")
def compared(tmp_path_factory, synthetic_archive) -> Path:
    """`cnnlab compare` of a tiny CNN and a randomly initialised VGG16 on the synthetic set: two runs and a report."""
    from cnnlab.cli import main

    os.environ.setdefault("CNNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    out = tmp_path_factory.mktemp("compare") / "both"
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        code = main(
            ["compare", "--models", "cnn,vgg16", "--preset", "quick", "--data", str(synthetic_archive), "--epochs", "1", "--train-limit", "256",
             "--val-size", "100", *TEST_LIMIT, *TINY_MODEL, *TINY_VGG16, *FLOAT32, "--out", str(out)]
        )
    assert code == 0, said.getvalue()
    (out.parent / "compare.stderr").write_text(said.getvalue())  # what it told the user, for the tests to read
    return out
