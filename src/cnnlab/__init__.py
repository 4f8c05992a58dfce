"""cnnlab: train a CNN from scratch on CIFAR-10, fine-tune VGG16, and compare the two honestly.

The pipeline, in the order data flows:
    config  -> data -> models -> train -> evaluate -> figures / report -> cli
"""

__version__ = "0.1.0"
