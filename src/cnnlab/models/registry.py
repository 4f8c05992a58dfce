"""Every kind of model cnnlab trains, found by name: `kind_of(config)` answers all the rest of cnnlab asks of one.

One `ModelKind` per kind (timm's `create_model` registry, kept to a dict), each declared in its own package under
`models/` (see `models.kind`). This module imports no Keras (seconds to import) and nothing of cnnlab's config:
`cnnlab.config` builds its sections and tables from `KINDS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.models import cnn, fastnet, vgg16
from cnnlab.models.kind import ModelKind

if TYPE_CHECKING:
    from cnnlab.config import RunConfig

KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (cnn.KIND, vgg16.KIND, fastnet.KIND)}

# What `cnnlab compare` trains, under the first kind's preset: a net from scratch against transfer learning.
COMPARED_KINDS = ("cnn", "vgg16")


def kind_of(config: RunConfig) -> ModelKind:
    """The kind `config.model` names (config accepts only these names)."""
    return KINDS[config.model]
