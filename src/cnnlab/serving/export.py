"""Export a finished run's model for other runtimes, and check that the artifact answers as the run's model does.

    cnnlab export RUN --format onnx          RUN/export/model.onnx      (ONNX Runtime and most other stacks)
    cnnlab export RUN --format savedmodel    RUN/export/saved_model/    (TensorFlow Serving; signature `serve`)
    cnnlab export RUN --format litert        RUN/export/model.tflite    (LiteRT, once TensorFlow Lite)
    cnnlab predict RUN/export/model.onnx IMAGE...                       the shipped artifact, answering as the run

Keras's own `model.export` writes each artifact, from a float32 copy of the run's model: a run trained in bfloat16
exports in float32, the portable form. The artifact takes what `model.keras` takes, raw 0-255 RGB images, float32,
(batch, height, width, 3) (the preprocessing is inside the model), and returns class probabilities. Beside it,
`<artifact>.classes.json` names the classes, the input size and how the run scores images (resize mode, test-time
augmentation).

Before the artifact is moved into place, its own runtime (tf.saved_model.load, onnxruntime, the LiteRT interpreter)
runs it on test images of the run's data beside the Keras model as loaded: the largest difference in any class
probability and the top-1 agreement go to `<artifact>.parity.json` beside it, and an artifact above the tolerance is
not kept. Nothing is overwritten, and nothing is half-written: the export is staged in a temporary folder beside
its destination and renamed into place; a failed export removes the folders it made.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from cnnlab.common.cores import usable_cores
from cnnlab.common.errors import CnnlabError, first_line, install_hint
from cnnlab.common.files import TEMPORARY_PREFIX, read_json, write_json
from cnnlab.config import RESIZE_MODES, TTA_LEVELS
from cnnlab.runs.run import Run, RunSettings


class Format(NamedTuple):
    keras_name: str  # what model.export calls it
    file_name: str  # the artifact's default name under RUN/export; its suffix, if any, is required of --out
    modules: tuple[str, ...]  # what writing and running it needs (the export extra)


FORMATS = {
    "savedmodel": Format("tf_saved_model", "saved_model", ("tensorflow",)),
    "onnx": Format("onnx", "model.onnx", ("tensorflow", "tf2onnx", "onnx", "onnxruntime")),
    "litert": Format("litert", "model.tflite", ("tensorflow", "ai_edge_litert")),
}
CLASSES_SUFFIX = ".classes.json"
PARITY_SUFFIX = ".parity.json"
EXTRA_HINT = "install the export extra: " + install_hint("export")
PARITY_BATCH = 32  # images per call: bounds the memory of VGG16 at 224 px in every runtime
# The largest difference in any class probability at which the artifact still counts as the run's model, by the
# precision the Keras model computes in. float32 on both sides differs only in the order of additions (another
# runtime's kernels): below 1e-6 in practice; 1e-3 leaves room for deep nets, while a real fault (a preprocessing
# step lost, a layer dropped or changed) moves probabilities by far more. A run trained in mixed precision is compared
# as loaded, computing in bfloat16 (8 significant bits, 0.4% rounding per operation) or float16 (11 bits) against
# the float32 artifact: the gap is the run's own rounding, which a confident softmax turns into differences of a few
# hundredths at most. Top-1 agreement is reported, not gated: with the difference bounded, only images whose top two
# classes are nearly tied can disagree, and they may.
TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}


def export_run(run_dir: Path, format: str, out: Path | None = None, parity_images: int = 256,
               log: Callable[[str], None] = lambda line: None) -> dict[str, object]:
    """Export the finished run's model as `format` to `out` (default RUN/export/<file name>) after checking its
    parity on `parity_images` test images; returns the parity record, written beside the artifact. An artifact that
    fails the check is not kept, and the error carries its record's numbers."""
    out, run, settings = _checked(run_dir, format, out, parity_images)
    images = parity_sample(run, parity_images)
    model = _load_probability_model(run, settings.class_names)
    # The run's lock only when writing into the run (its export/ folder): a run on a read-only mount still exports
    # elsewhere. Exits in reverse: the staging folder goes first, then any folder made for `out` if the export failed.
    writes_into_run = out.resolve().is_relative_to(run.path.resolve())
    with run.locked() if writes_into_run else contextlib.nullcontext(), _folders_made_for(out.parent), \
            tempfile.TemporaryDirectory(prefix=TEMPORARY_PREFIX, dir=out.parent) as staging:
        staged = Path(staging) / FORMATS[format].file_name
        log(f"exporting {format} with Keras (a minute or more for a large model)")
        write_artifact(model, format, staged, _description(format, model, settings, run_dir))
        log(f"checking parity on {len(images)} test images")
        record = {"format": format, "artifact": str(out), **check_parity(model, _load_staged(format, staged, out),
                                                                         images)}
        if not record["passed"]:
            # A failed check writes no record file: the error line carries its numbers. A file would either sit
            # under the name of a passing artifact's record (and clobber or impersonate it), or be something left
            # behind by an export that kept nothing, and a failed export leaves nothing behind.
            raise CnnlabError(f"parity check failed: max |difference| {record['max_abs_difference']:.2e} is "
                              f"above the tolerance {record['tolerance']:.0e} (top-1 agreement "
                              f"{record['top1_agreement']:.1%} on {record['images']} images); {out} was not written")
        _move_into_place(staged, out, format)
        # After the move: a record in place always describes the artifact in place, and it is keyed by that
        # artifact's path, so another export (another format, another --out) never overwrites it.
        write_json(parity_path(out), record)
    return record


def _load_staged(format: str, staged: Path, out: Path):
    """The artifact just written, in its runtime; a converter's output that its runtime cannot run is a one-line
    refusal that names the export, not the staging file (tf2onnx 1.16, for one, cannot convert ConvNeXt's grouped
    convolutions, and turns EfficientNetV2's normalisation constants into extra inputs)."""
    try:
        return load_artifact(format, staged)
    except CnnlabError as exc:
        reason = str(exc).replace(str(staged), staged.name)
        reason = reason if len(reason) <= 200 else reason[:200] + "..."  # runtimes quote whole graph nodes
        raise CnnlabError(f"the {format} file converted from this model does not run in its runtime ({reason}); "
                          f"{out} was not written; --format savedmodel or litert may work") from None


@contextlib.contextmanager
def _folders_made_for(folder: Path):
    """Make `folder` and any missing parents; if the block fails, remove those made here (when empty)."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # the deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        for path in made:
            with contextlib.suppress(OSError):  # not made after all, or not empty: left as it is
                path.rmdir()
        raise


def check_export(run_dir: Path, format: str, out: Path | None, parity_images: int) -> Path:
    """Refuse, in one line and before anything is loaded, an export that cannot be made; returns the output path."""
    return _checked(run_dir, format, out, parity_images)[0]


def _checked(run_dir: Path, format: str, out: Path | None, parity_images: int) -> tuple[Path, Run, RunSettings]:
    """The checks of `check_export`; returns the output path, the run and its settings (its metrics readable)."""
    require_modules(FORMATS[format].modules, f"{format} export")
    if parity_images < 1:
        raise CnnlabError(f"--parity-images must be at least 1, got {parity_images}")
    run = Run.open_finished(run_dir)
    settings = run.settings()
    out = Path(out) if out else run.export_dir / FORMATS[format].file_name
    check_output(out, format)
    return out, run, settings


def require_modules(modules: tuple[str, ...], what: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise CnnlabError(f"{what} needs {', '.join(missing)}: {EXTRA_HINT}")


def classes_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + CLASSES_SUFFIX)


def parity_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + PARITY_SUFFIX)


def check_output(out: Path, format: str) -> None:
    """Refuse an output path (or its classes or parity file) that exists, and a file name the format's readers would
    miss."""
    for path in (out, classes_path(out), parity_path(out)):
        if path.exists() or path.is_symlink():
            raise CnnlabError(f"{path} already exists; cnnlab export never overwrites (choose another --out)")
    suffix = Path(FORMATS[format].file_name).suffix
    if suffix and out.suffix != suffix:
        raise CnnlabError(f"--out {out} should end in {suffix}, the suffix of a {format} file")


def parity_sample(run: Run, count: int) -> np.ndarray:
    """`count` test images of the run's own data (stratified by class, seed 0; all if there are fewer), as float32."""
    from cnnlab.data.sampling import stratified_sample

    data = run.load_data()
    index = stratified_sample(data.y_test, count, seed=0) if count < len(data.y_test) else slice(None)
    return data.x_test[index].astype(np.float32)


def _load_probability_model(run: Run, class_names) -> object:
    """The run's Keras model, checked to answer for its classes and to end in a softmax: every cnnlab kind returns
    probabilities, and an artifact must too."""
    import keras

    model = run.load_model(class_names)
    last = model.layers[-1]
    if getattr(last, "activation", None) is not keras.activations.softmax:
        raise CnnlabError(f"the model's last layer ({last.name}) is not a softmax; cnnlab exports probabilities")
    return model


def _description(format: str, model, settings, run_dir: Path) -> dict[str, object]:
    """What the classes file says: enough for `cnnlab predict` (or anyone) to use the artifact as the run's model."""
    height, width = model.input_shape[1:3]
    return {"format": format, "classes": list(settings.class_names), "image_size": [height, width],
            "input": "float32 RGB values 0-255, shape (batch, height, width, 3)",
            "output": "class probabilities, shape (batch, classes)",
            "resize": settings.resize, "test_time_augmentation": settings.augmentation, "run": str(run_dir)}


def write_artifact(model, format: str, path: Path, description: dict) -> None:
    """`model`, in float32, exported by Keras to `path`, with its classes file beside it."""
    import keras

    from cnnlab.models.saving import float32_copy

    copy = float32_copy(model, onnx_safe=format == "onnx")
    # Stated, not inferred from the model's calls (a fresh copy has made none): any batch of float32 images.
    signature = [keras.InputSpec(shape=model.input_shape, dtype="float32", name="image")]
    with warnings.catch_warnings():  # Keras's tf2onnx patch probes a NumPy attribute that NumPy 2 warns about
        warnings.simplefilter("ignore", FutureWarning)
        try:
            copy.export(path, FORMATS[format].keras_name, verbose=False, input_signature=signature)
        except Exception as exc:  # a converter's failure: one line, nothing kept
            raise CnnlabError(f"Keras could not export the model as {format}: {first_line(exc)}") from None
    write_json(classes_path(path), description)


def _move_into_place(staged: Path, out: Path, format: str) -> None:
    """The classes file first, the artifact last: an artifact in place always has its classes beside it."""
    check_output(out, format)  # again: the export took a while, and something may have appeared there since
    try:
        os.rename(classes_path(staged), classes_path(out))
        os.rename(staged, out)
    except OSError as exc:
        classes_path(out).unlink(missing_ok=True)
        raise CnnlabError(f"cannot write {out}: {exc.strerror or exc}") from None


# Parity: the artifact in its own runtime against the Keras model.

def check_parity(model, artifact: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> dict[str, object]:
    """The Keras model's and the artifact's probabilities for `images`: their largest difference, judged by the
    tolerance of the precision the Keras model computes in, and how often their top classes agree."""
    from cnnlab.models.saving import compute_dtypes

    expected = np.asarray(model.predict(images, batch_size=PARITY_BATCH, verbose=0), dtype=np.float64)
    answered = in_batches(artifact, images).astype(np.float64)
    precision = next((name for name in ("bfloat16", "float16") if name in compute_dtypes(model)), "float32")
    difference = float(np.abs(answered - expected).max())
    return {"images": len(images), "keras_precision": precision, "max_abs_difference": difference,
            "top1_agreement": float((answered.argmax(axis=1) == expected.argmax(axis=1)).mean()),
            "tolerance": TOLERANCE[precision], "passed": difference <= TOLERANCE[precision]}


def in_batches(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
               batch_size: int = PARITY_BATCH) -> np.ndarray:
    """`predict` (a batch of images -> their probabilities) over all of `images`, `batch_size` at a time."""
    return np.concatenate([predict(images[start:start + batch_size]) for start in range(0, len(images), batch_size)])


def load_artifact(format: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The exported model at `path`, run by its own runtime: a function from a batch of float32 images to their
    class probabilities."""
    loaders = {"savedmodel": _saved_model, "onnx": lambda path: OnnxModel(path).predict_on_batch, "litert": _litert}
    return loaders[format](Path(path))


def _saved_model(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda images: loaded.serve(tf.constant(images)).numpy()


def _litert(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    # Every core this process may use, as TensorFlow and ONNX Runtime do by default (LiteRT's default is fewer).
    interpreter = Interpreter(model_path=str(path), num_threads=usable_cores())
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()

    def predict(images: np.ndarray) -> np.ndarray:
        if tuple(interpreter.get_input_details()[0]["shape"]) != images.shape:  # the batch size is set per shape
            interpreter.resize_tensor_input(source["index"], images.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    return predict


# An exported ONNX file in place of a run: what `cnnlab predict` asks of a model.

class OnnxModel:
    """An ONNX file run by onnxruntime, with what cnnlab's prediction code asks of a Keras model: `input_shape`,
    `predict(images, batch_size=, verbose=)` and `predict_on_batch(images)`."""

    def __init__(self, path: Path):
        require_modules(("onnxruntime",), "running an ONNX file")
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types for a damaged or foreign file
            raise CnnlabError(f"cannot load {path}: {first_line(exc)}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CnnlabError(f"{path} takes {len(inputs)} inputs, not one batch of images: not the ONNX file of a "
                              "cnnlab model")
        self.input_name, self.input_shape = inputs[0].name, tuple(inputs[0].shape)
        self.output_shape = tuple(self.session.get_outputs()[0].shape)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(images, dtype=np.float32)})[0]

    def predict(self, images: np.ndarray, batch_size: int = PARITY_BATCH, verbose: int = 0) -> np.ndarray:
        return in_batches(self.predict_on_batch, images, batch_size)


def read_onnx_settings(path: Path) -> RunSettings:
    """The settings (`runs.run.RunSettings`) in an exported ONNX file's classes file, read without loading it."""

    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"exported model not found: {path}")
    described = read_json(classes_path(path))
    problem = _description_problem(described)
    if problem:
        raise CnnlabError(f"{classes_path(path)} is damaged ({problem})")
    return RunSettings(tuple(described["classes"]), described["test_time_augmentation"], described["resize"],
                       tuple(described["image_size"]), metrics={})


def load_onnx(path: Path, class_names: tuple[str, ...]) -> OnnxModel:
    """An exported ONNX file, checked to answer for `class_names` (its classes file's)."""
    model = OnnxModel(path)
    if model.output_shape[-1] != len(class_names):
        raise CnnlabError(f"{path} answers for {model.output_shape[-1]} classes, but {classes_path(path)} names "
                          f"{len(class_names)}")
    return model


def _description_problem(described) -> str | None:
    if not isinstance(described, dict):
        return "not a JSON object"
    classes = described.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)
            and len(set(classes)) == len(classes)):
        return "no list of distinct class names"
    if described.get("resize") not in RESIZE_MODES:
        return f"resize is not one of {RESIZE_MODES}"
    augmentation = described.get("test_time_augmentation")
    if type(augmentation) is not int or augmentation not in TTA_LEVELS:
        return f"test_time_augmentation is not one of {TTA_LEVELS}"
    size = described.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(side) is int and side >= 1 for side in size)):
        return "image_size is not [height, width] in pixels"
    return None
