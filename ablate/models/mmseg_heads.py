"""mmseg's decode heads around our blocks: ``model.head: {style: mmseg}``.

mmsegmentation 1.2.2 does not put an attention block straight between the backbone and the
classifier: each mechanism's decode head wraps it in convolutions of its own, and the model-zoo
numbers are for those heads. With ``style: mmseg`` the segmenter builds the same wrapping around
our block (the block itself is ours, parity-tested against mmseg's in tests/test_mmseg_parity.py):

* ``FCNHead`` (mechanism ``none``: mmseg's no-attention baseline, ``num_convs=2``), ``NLHead``
  (the Non-local presets), ``GCHead`` (``gcnet``), ``DNLHead`` (``dnl``), ``CCHead`` (``ccnet``):
  a 3x3 conv + BN + ReLU from the input's channels to the head's ``channels``, the block, a
  second 3x3 conv + BN + ReLU, the input concatenated with the result (input first) and fused by
  a 3x3 conv + BN + ReLU to ``channels``, then dropout (0.1, channel-wise) and a 1x1 classifier.
* ``EMAHead`` (``emanet``): the same layout, its ``ema_in_conv`` and ``bottleneck`` being the two
  3x3 convs; its 1x1 mid conv, EM unit, ReLU, 1x1 conv + BN, residual and ReLU are our EMABlock.
  We build the unit at the head's ``channels`` (mmseg's ``ema_channels``, equal to ``channels``
  in its configs). mmseg freezes the mid conv (``requires_grad=False``); our block trains it.
* ``ISAHead`` (``isa``): the 3x3 in-conv, then the block (the interlaced attention and the 1x1
  fusion of input and context are our ISABlock), then dropout and the classifier.

Initialisation as mmseg's: the head's convs Kaiming-normal (fan_out, ReLU), BN weight 1 and bias
0, the classifier normal with std 0.01 and bias 0. A mechanism whose block mmseg has no head for
(or whose head does more than wrap one block: DAHead's two branches with their own classifiers
and losses, PSAHead's, APCHead's) is refused when the study is loaded (:func:`check_style`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attention.criss_cross import CCNetBlock
from ..attention.dnl import DisentangledNonLocalBlock
from ..attention.ema import EMABlock
from ..attention.gcnet import GlobalContextBlock
from ..attention.interlaced import ISABlock
from ..attention.non_local import NonLocalBlock
from ..attention.none import NoAttention
from .backbone import conv_bn_relu

DROPOUT = 0.1  # mmseg's BaseDecodeHead dropout_ratio (Dropout2d)


@dataclass(frozen=True)
class HeadLayout:
    """The convolutions an mmseg decode head puts around its block."""

    head: str  # mmseg's class name
    after: bool = True  # a 3x3 conv + BN + ReLU after the block (convs[1], EMAHead's bottleneck)
    concat: bool = True  # the input concatenated with the features, fused by a 3x3 conv (conv_cat)


LAYOUTS = {
    NoAttention: HeadLayout("FCNHead"),
    NonLocalBlock: HeadLayout("NLHead"),
    GlobalContextBlock: HeadLayout("GCHead"),
    DisentangledNonLocalBlock: HeadLayout("DNLHead"),
    CCNetBlock: HeadLayout("CCHead"),
    EMABlock: HeadLayout("EMAHead"),
    ISABlock: HeadLayout("ISAHead", after=False, concat=False),
}


def layout_of(preset) -> HeadLayout | None:
    """The mmseg head layout for a preset's block (None: mmseg has no such head)."""
    return LAYOUTS.get(getattr(preset, "block", None))


def check_style(preset) -> str | None:
    """Why ``style: mmseg`` cannot wrap ``preset`` (None: it can)."""
    if layout_of(preset) is not None:
        return None
    from ..attention import MECHANISMS

    ok = sorted(name for name, p in MECHANISMS.items() if layout_of(p) is not None)
    return (f"mmseg has no decode head that wraps mechanism {preset.name!r} (block {preset.block.__name__}) "
            f"in convolutions we reproduce; style mmseg supports: {', '.join(ok)}; use style: plain for "
            "the others")


class MMSegHead(nn.Module):
    """An mmseg decode head without its block: ``forward(x, block)`` runs ``before`` (3x3, input ->
    ``channels``), the block, ``after`` (3x3, or nothing), ``fuse`` (3x3 on [x, features], or
    nothing) and ``classify`` (dropout + 1x1 conv). The block stays the segmenter's ``attention``."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, layout: HeadLayout):
        super().__init__()
        self.layout = layout
        self.before = conv_bn_relu(in_channels, channels)
        self.after = conv_bn_relu(channels, channels) if layout.after else nn.Identity()
        self.fuse = conv_bn_relu(in_channels + channels, channels) if layout.concat else None
        self.classify = nn.Sequential(nn.Dropout2d(DROPOUT), nn.Conv2d(channels, num_classes, kernel_size=1))
        self._init_as_mmseg()

    def _init_as_mmseg(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.classify[1]:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classify[1].weight, std=0.01)
        nn.init.zeros_(self.classify[1].bias)

    def forward(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        f = self.after(block(self.before(x)))
        if self.fuse is not None:
            f = self.fuse(torch.cat([x, f], dim=1))
        return self.classify(f)


__all__ = ["DROPOUT", "LAYOUTS", "HeadLayout", "MMSegHead", "check_style", "layout_of"]
