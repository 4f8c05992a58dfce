"""CIFAR-10 you can trust: locate, verify, safely parse, validate, cache, split."""

from cnnlab.data.cifar10 import Cifar10, load_cifar10
from cnnlab.data.splits import Splits, make_splits

__all__ = ["Cifar10", "Splits", "load_cifar10", "make_splits"]
