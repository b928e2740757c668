"""APCNet's adaptive context modules: low-rank family, nodes = pooled regions at several scales.

Adaptive Pyramid Context Network for Semantic Segmentation, Junjun He, Zhongying Deng, Lei
Zhou, Yali Wang, Yu Qiao, CVPR 2019,
https://openaccess.thecvf.com/content_CVPR_2019/papers/He_Adaptive_Pyramid_Context_Network_for_Semantic_Segmentation_CVPR_2019_paper.pdf
(no arXiv version). Code consulted: mmsegmentation's ``APCHead``/``ACM``
(``mmseg/models/decode_heads/apc_head.py``, read as source; not imported), a maintained
re-implementation; no official release by the authors was found.

What the paper does. For each pooling scale s (1, 2, 3, 6) an Adaptive Context Module (ACM):

* region features: the input is adaptively average-pooled to s x s and reduced (1x1 conv,
  BN, ReLU): s^2 nodes;
* affinity: the reduced input x plus a global vector g(x) (global average pool, 1x1 conv,
  BN, ReLU, broadcast) goes through a 1x1 conv to s^2 channels and a **sigmoid**: each pixel's
  affinity to each region (not normalised over regions);
* context: each pixel's affinity-weighted sum of the region features, a 1x1 conv (BN, ReLU),
  added to x, ReLU, and a fusion 1x1 conv (BN, ReLU) (mmsegmentation's ``fusion=True``);

the head concatenates the input with the ACM outputs and fuses them with a 3x3 conv, BN,
ReLU. Ours is that head's body mapped back to C channels, so the block keeps the shape: it
is **not** residual (the input enters through the concatenation, as in the paper), which
also means it adds a 3x3 conv of capacity that the residual blocks here do not have; compare
it with that in mind. ACM width is C / ``reduction`` (mmsegmentation: 2048 -> 512, i.e. 4).
The global branch applies BatchNorm to a 1x1 map, so training needs batches of 2 or more.

Factor ``scales``: which pooling scales, as a string of comma-separated integers from
{1, 2, 3, 6} (``"1,2,3,6"`` by default; a string because study files give factor values as
scalars), e.g. ``"6"`` or ``"1,2"``.
"""
from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import choice, reduction, switch

PAPER_SCALES = (1, 2, 3, 6)
SCALE_CHOICES = tuple(",".join(str(s) for s in c) for r in range(1, 5) for c in combinations(PAPER_SCALES, r))


def parse_scales(scales) -> tuple[int, ...]:
    """``"1,2,3,6"`` or a sequence of ints -> a sorted tuple of distinct positive ints."""
    if isinstance(scales, str):
        scales = [int(s) for s in scales.replace(" ", "").split(",") if s]
    out = tuple(sorted(set(int(s) for s in scales)))
    if not out or min(out) < 1:
        raise ValueError(f"scales must be positive integers, got {scales!r}")
    return out


def _cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class AdaptiveContext(nn.Module):
    """One ACM at pooling scale s: sigmoid affinities of every pixel to s*s pooled regions."""

    def __init__(self, channels: int, inner: int, scale: int, fusion: bool = True):
        super().__init__()
        self.scale = scale
        self.pooled_reduce = _cbr(channels, inner)
        self.input_reduce = _cbr(channels, inner)
        self.global_info = _cbr(inner, inner)
        self.affinity_conv = nn.Conv2d(inner, scale * scale, kernel_size=1)
        self.residual = _cbr(inner, inner)
        self.fusion = _cbr(inner, inner) if fusion else nn.Identity()

    def affinity(self, x_red: torch.Tensor) -> torch.Tensor:
        """(B, s*s, N) sigmoid affinities of the pixels to the regions."""
        g = self.global_info(F.adaptive_avg_pool2d(x_red, 1))
        return torch.sigmoid(self.affinity_conv(x_red + g)).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions = self.pooled_reduce(F.adaptive_avg_pool2d(x, self.scale)).flatten(2)  # B, c, s*s
        x_red = self.input_reduce(x)
        affinity = self.affinity(x_red)
        maps.record(f"affinity_{self.scale}x{self.scale}", affinity, kind="maps", grid=x.shape[-2:])
        context = (regions @ affinity).reshape_as(x_red)  # B, c, H, W
        return self.fusion(torch.relu(self.residual(context) + x_red))


class APCBlock(nn.Module):
    """APCNet's pyramid of ACMs, concatenated with the input and fused back to C channels."""

    FACTORS = (
        choice("scales", SCALE_CHOICES, "pooling scales of the ACMs"),
        reduction("ACM width C/reduction"),
        switch("fusion", "fusion conv after each ACM"),
    )

    def __init__(self, channels: int, scales="1,2,3,6", reduction: int = 4, fusion: bool = True):
        super().__init__()
        self.scales = parse_scales(scales)
        inner = max(1, channels // reduction)
        self.acms = nn.ModuleList(AdaptiveContext(channels, inner, s, fusion) for s in self.scales)
        self.bottleneck = _cbr(channels + len(self.scales) * inner, channels, k=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([x] + [acm(x) for acm in self.acms], dim=1))
