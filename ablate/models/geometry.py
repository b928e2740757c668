"""The feature map an attention block sees, from a cell's backbone and head specs alone: nothing
built and nothing heavy imported (no Lightning, no torchmetrics), so the read-only commands (the
report's costs shapes, the doctor) can ask without loading the training stack.
:mod:`ablate.models.segmenter` re-exports these names."""
from __future__ import annotations

from ..config.trial import HeadSpec
from ..plugins.mechanisms import backbone_geometry, is_spec
from . import registry


def feature_geometry(backbone: dict, head: HeadSpec | dict | None = None) -> tuple[int, int]:
    """(channels the attention block sees, the backbone's output stride), without building
    anything (a ResNet would load its weights; a plugin's is built once, cached, and says)."""
    channels, stride = (backbone_geometry if is_spec(backbone["name"]) else registry.geometry)(backbone)
    return as_head(head).channels or channels, stride


def as_head(head: HeadSpec | dict | None) -> HeadSpec:
    """``model.head`` as its record: a trial config's dict (or None: no head settings) read with
    :class:`~ablate.config.trial.HeadSpec`'s defaults, which live there alone."""
    return head if isinstance(head, HeadSpec) else HeadSpec(**(head or {}))


def feature_side(side: int, stride: int) -> int:
    """The feature map's side for an input side (the backbones' stride-2 convs round up)."""
    return -(-side // stride)
