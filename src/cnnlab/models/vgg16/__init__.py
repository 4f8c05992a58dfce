"""VGG16 for transfer learning, the tutorial's pretrained side: ImageNet's convolutional base (or a local weights
file), a new dense head for the data's classes, trained in two phases (the head alone, then the top blocks
fine-tuned), through the recipe every backbone shares (`models.transfer`).

Its settings keep their own section, `[vgg16]`, with the tutorial's head (flatten, dense 256, dropout 0.5) and
CIFAR-10's own 32 px as defaults.
"""

from __future__ import annotations

from cnnlab.models.transfer import CAFFE, Backbone, transfer_kind, transfer_settings

# The filters of each conv in each of VGG16's blocks, as keras.applications.VGG16 builds them.
BLOCK_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
NUM_BLOCKS = len(BLOCK_WIDTHS)

BACKBONE = Backbone(
    name="vgg16", title="VGG16", blocks=NUM_BLOCKS, application="VGG16", preprocessing=CAFFE, image_size=32,
    block_ends=tuple(f"block{block}_pool" for block in range(1, NUM_BLOCKS + 1)),
    offline_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    head_pooling="flatten", head_units=(256,), head_dropout=0.5,
    gradients_by_convolution=True,  # block 5 at 32 px trained 3-7x faster (benchmarks/RESULTS.md)
)
Vgg16Config = transfer_settings(BACKBONE)
KIND = transfer_kind(BACKBONE, Vgg16Config)
