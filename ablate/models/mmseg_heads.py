"""mmseg's decode heads around our blocks: ``model.head: {style: mmseg}``.

mmsegmentation 1.2.2 does not put an attention block straight between the backbone and the
classifier: each mechanism's decode head wraps it in convolutions of its own, and the model-zoo
numbers are for those heads. With ``style: mmseg`` the segmenter builds the same wrapping around
our block (the block itself is ours, parity-tested against mmseg's in tests/compat/test_mmseg_parity.py):

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
* ``DAHead`` (``danet``, ``branch: both`` only): two branches, each a 3x3 conv + BN + ReLU, one
  module of our DANetBlock (its PAM or its CAM, each with its own gamma residual, as mmseg's),
  and a second 3x3 conv + BN + ReLU; the branch features are summed and classified. In training
  each branch also has a classifier of its own whose cross-entropy is added with weight 1, as
  mmseg's three ``loss_decode`` terms (``pam_cam``, ``pam``, ``cam``); at test time only the
  summed branch counts, as in mmseg's ``predict``.

Initialisation as mmseg's: the head's convs Kaiming-normal (fan_out, ReLU), BN weight 1 and bias
0, the classifier normal with std 0.01 and bias 0. A mechanism whose block mmseg has no head for
(or whose head does more than wrap the block: PSAHead's and APCHead's convs are part of the
attention itself) is refused when the study is loaded (:func:`check_style`, with the table of layouts
in the torch-free :mod:`ablate.models.mmseg_layouts`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..attention.danet import DANetBlock
from .backbone import conv_bn_relu
from .mmseg_layouts import DANET, LAYOUTS, HeadLayout, check_style, layout_of  # noqa: F401 (re-exported)

DROPOUT = 0.1  # mmseg's BaseDecodeHead dropout_ratio (Dropout2d)


def build_head(preset, in_channels: int, channels: int, num_classes: int) -> nn.Module:
    """The mmseg head for ``preset``'s block (see :data:`LAYOUTS`)."""
    layout = layout_of(preset)
    if layout.branches:
        return DualHead(in_channels, channels, num_classes)
    return MMSegHead(in_channels, channels, num_classes, layout)


def classifier(channels: int, num_classes: int) -> nn.Sequential:
    """mmseg's ``cls_seg``: channel-wise dropout, then a 1x1 conv (normal init, std 0.01)."""
    conv = nn.Conv2d(channels, num_classes, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(nn.Dropout2d(DROPOUT), conv)


def init_as_mmseg(module: nn.Module) -> None:
    """mmcv's ConvModule init: convs Kaiming-normal (fan_out, ReLU), BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
        init_as_mmseg(self)
        self.classify = classifier(channels, num_classes)

    def block_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the block sees (the segmenter's ``features``)."""
        return self.before(x)

    def forward_all(self, x: torch.Tensor, block: nn.Module, upsample: nn.Module | None = None
                    ) -> tuple[torch.Tensor, list]:
        """(logits, the logits of further training losses: none). ``upsample`` (the segmenter's
        CARAFE stages, or None) runs on the fused features, before ``classify``."""
        f = self.after(block(self.before(x)))
        if self.fuse is not None:
            f = self.fuse(torch.cat([x, f], dim=1))
        return self.classify(f if upsample is None else upsample(f)), []

    def forward(self, x: torch.Tensor, block: nn.Module, upsample: nn.Module | None = None) -> torch.Tensor:
        return self.forward_all(x, block, upsample)[0]


class DualHead(nn.Module):
    """mmseg's DAHead around a DANetBlock(branch=both): ``block.pam`` and ``block.cam`` each between
    a 3x3 conv in (``pam_in``/``cam_in``) and a 3x3 conv out; ``classify`` on the sum of the two
    branches; ``pam_classify``/``cam_classify`` on each branch, for the training losses."""

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.layout = LAYOUTS[DANET]
        self.pam_in, self.pam_out = conv_bn_relu(in_channels, channels), conv_bn_relu(channels, channels)
        self.cam_in, self.cam_out = conv_bn_relu(in_channels, channels), conv_bn_relu(channels, channels)
        init_as_mmseg(self)
        self.pam_classify = classifier(channels, num_classes)
        self.cam_classify = classifier(channels, num_classes)
        self.classify = classifier(channels, num_classes)

    def block_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the block's PAM sees (the segmenter's ``features``: the cue probe reads the PAM)."""
        return self.pam_in(x)

    def forward_all(self, x: torch.Tensor, block: DANetBlock, upsample: nn.Module | None = None
                    ) -> tuple[torch.Tensor, list]:
        """(the summed branches' logits, [the PAM branch's, the CAM branch's]). ``upsample`` (the
        segmenter's CARAFE stages, or None) runs on the summed branches only, before ``classify``;
        the training-only branch logits stay at the features' size."""
        pam = self.pam_out(block.pam(self.pam_in(x)))
        cam = self.cam_out(block.cam(self.cam_in(x)))
        fused = pam + cam
        return (self.classify(fused if upsample is None else upsample(fused)),
                [self.pam_classify(pam), self.cam_classify(cam)])

    def forward(self, x: torch.Tensor, block: DANetBlock, upsample: nn.Module | None = None) -> torch.Tensor:
        return self.forward_all(x, block, upsample)[0]


__all__ = ["DROPOUT", "LAYOUTS", "DualHead", "HeadLayout", "MMSegHead", "build_head", "check_style", "classifier",
           "init_as_mmseg", "layout_of"]
