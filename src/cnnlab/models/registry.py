"""Every kind of model cnnlab trains, found by name: `kind_of(config)` answers all the rest of cnnlab asks of one.

One `ModelKind` per kind (timm's `create_model` registry, kept to a dict), each declared under `models/`: the nets
trained from scratch and the pretrained backbones, in their own packages or as one entry of the Keras Applications
table (see `models.kind`). This module imports no Keras (seconds to import) and nothing of cnnlab's config:
`cnnlab.config` builds its sections and tables from `KINDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.common.errors import CnnlabError
from cnnlab.models import applications, cnn, efficientnet_lite0, fastnet, vgg16
from cnnlab.models.kind import ModelKind

if TYPE_CHECKING:
    from cnnlab.config import RunConfig

KINDS: dict[str, ModelKind] = {
    kind.name: kind for kind in (cnn.KIND, vgg16.KIND, fastnet.KIND, efficientnet_lite0.KIND, *applications.KINDS)
}

# The net from scratch that `cnnlab compare` trains first, under the first kind's preset.
SCRATCH_KIND = "cnn"


def pretrained_kind() -> str:
    """What `cnnlab compare` fine-tunes by default: EfficientNet-Lite0 where its ImageNet weights are installed
    (real ImageNet weights with no download), else VGG16, the tutorial's."""
    return efficientnet_lite0.KIND.name if efficientnet_lite0.imagenet_weights_installed() else vgg16.KIND.name


def compared_kinds() -> tuple[str, str]:
    """What `cnnlab compare` trains by default: a net from scratch against transfer learning."""
    return SCRATCH_KIND, pretrained_kind()


def kind_of(config: RunConfig) -> ModelKind:
    """The kind `config.model` names (config accepts only these names)."""
    return KINDS[config.model]


def check_model_list(names: list[str]) -> None:
    """Models to train side by side: two or more, each a kind and named once (each trains into its own folder)."""
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise CnnlabError(f"unknown model {unknown[0]!r}; `cnnlab models` lists them")
    if len(set(names)) != len(names) or len(names) < 2:
        raise CnnlabError("name two or more different models, comma-separated")
