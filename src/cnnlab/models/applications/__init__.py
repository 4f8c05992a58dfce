"""The image backbones of Keras Applications, one entry each, fine-tuned through the transfer recipe every backbone
shares (`models.transfer`): `--model resnet50v2` and so on, named as Keras names their modules.

Each entry says what the recipe cannot find out by itself: Keras's constructor, the input normalisation its
ImageNet weights expect (none where the network normalises inside, as MobileNetV3, EfficientNetV2 and ConvNeXt
do), its number of blocks (checked against the network by the tests), and the file Keras would download, for a
machine without the network.
"""

from __future__ import annotations

from cnnlab.models.transfer import CAFFE, MINUS_ONE_TO_ONE, TORCH, Backbone, transfer_kind

# 96 px: CIFAR-10's 32 px upscaled 3x, where ImageNet features start to pay (benchmarks/backbones.py) at a ninth of
# the cost of 224 px.
SIZE = 96

BACKBONES = (
    Backbone(name="vgg19", title="VGG19", blocks=5, application="VGG19", preprocessing=CAFFE, image_size=32,
             block_ends=tuple(f"block{block}_pool" for block in range(1, 6)),
             offline_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
             head_pooling="flatten", head_units=(256,), head_dropout=0.5),
    Backbone(name="resnet50v2", title="ResNet50V2", blocks=5, application="ResNet50V2",
             preprocessing=MINUS_ONE_TO_ONE, image_size=SIZE,
             offline_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    Backbone(name="mobilenetv3small", title="MobileNetV3Small", blocks=5, application="MobileNetV3Small",
             preprocessing=None, image_size=SIZE,
             offline_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    Backbone(name="mobilenetv3large", title="MobileNetV3Large", blocks=5, application="MobileNetV3Large",
             preprocessing=None, image_size=SIZE,
             offline_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    Backbone(name="efficientnetv2b0", title="EfficientNetV2B0", blocks=5, application="EfficientNetV2B0",
             preprocessing=None, image_size=SIZE, offline_file="efficientnetv2-b0_notop.h5"),
    Backbone(name="convnexttiny", title="ConvNeXtTiny", blocks=4, application="ConvNeXtTiny", preprocessing=None,
             image_size=SIZE, offline_file="convnext_tiny_notop.h5"),
    Backbone(name="densenet121", title="DenseNet121", blocks=5, application="DenseNet121", preprocessing=TORCH,
             image_size=SIZE, offline_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
)
KINDS = tuple(transfer_kind(backbone) for backbone in BACKBONES)
