"""A model's size counted from its architecture, without building it.

Building a Keras layer allocates its weights, so a layer of a billion units cannot even be built to be measured.
Instead each model module walks its architecture again through a `Tally`, layer by layer as its builder does; the
tally follows the feature map's shape and adds up

- the parameters each layer holds, counted as `keras.Model.count_params` counts them (trainable or not), and
- the values each layer outputs per image: what the forward pass keeps for the backward pass.

The tests compare the count with the built model for small configurations of every kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def poolings_allowed(size: int) -> int:
    """How many 2x2 max poolings a `size`-px map takes before nothing is left: each floors the size to half."""
    return size.bit_length() - 1


@dataclass
class Tally:
    shape: tuple[int, ...]  # the feature map after the layers tallied so far, without the batch axis
    parameters: int = 0
    activations: int = field(init=False)  # values per image, over the input and every layer's output

    def __post_init__(self):
        self.shape = tuple(self.shape)
        self.activations = math.prod(self.shape)

    def layer(self, shape: tuple[int, ...], parameters: int = 0) -> None:
        """Any layer: its output shape and the parameters it holds."""
        self.shape = tuple(shape)
        self.parameters += parameters
        self.activations += math.prod(self.shape)

    def conv(self, filters: int, kernel: int = 3, bias: bool = True, padding: str = "same") -> None:
        height, width, channels = self.shape
        if padding == "valid":
            height, width = height - kernel + 1, width - kernel + 1
        self.layer((height, width, filters), kernel * kernel * channels * filters + (filters if bias else 0))

    def batch_norm(self, scale_and_shift: bool = True) -> None:
        # The moving mean and variance always; gamma and beta when the layer learns them.
        self.layer(self.shape, self.shape[-1] * (4 if scale_and_shift else 2))

    def elementwise(self, parameters: int = 0) -> None:
        """A layer that keeps the shape: an activation, dropout, rescaling."""
        self.layer(self.shape, parameters)

    def channel_shift(self) -> None:
        """A learned shift per channel."""
        self.layer(self.shape, self.shape[-1])

    def pool(self) -> None:
        """2x2 max pooling with Keras's default "valid" padding: an odd row or column is dropped."""
        height, width, channels = self.shape
        self.layer((height // 2, width // 2, channels))

    def global_pool(self) -> None:
        self.layer((self.shape[-1],))

    def resize(self, size: int) -> None:
        self.layer((size, size, self.shape[-1]))

    def flatten(self) -> None:
        self.layer((math.prod(self.shape),))

    def dense(self, units: int, bias: bool = True) -> None:
        self.layer((units,), self.shape[-1] * units + (units if bias else 0))

    def classifier_head(self, hidden_units: tuple[int, ...], dropout: bool, num_classes: int) -> None:
        """Hidden dense layers, each followed by dropout when there is any, then the output layer."""
        for units in hidden_units:
            self.dense(units)
            if dropout:
                self.elementwise()
        self.dense(num_classes)
