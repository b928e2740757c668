"""GCNet: query-independent global context (pairwise family).

Paper: *GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond*, Yue Cao,
Jiarui Xu, Stephen Lin, Fangyun Wei, Han Hu, ICCV Workshops 2019, https://arxiv.org/abs/1904.11492.
Official code consulted: xvjiarui/GCNet (``ContextBlock``); mmcv's ``cnn.bricks.ContextBlock``
(the same block, used by mmseg's ``GCHead``).

The paper observes that Non-local attention maps are nearly the same for every query and
makes the attention **query-independent**: one 1x1 conv ``W_k`` to a single channel, softmax
over all positions, attention-pool the input into one C-vector (context modelling); a bottleneck
transform ``conv1x1 (C -> C/r) -> LayerNorm -> ReLU -> conv1x1 (C/r -> C)`` (the LayerNorm eases
optimisation of the bottleneck); fusion by broadcast **add** (default) or **mul**
(``x * sigmoid(transform)``) to every position. The last conv of the transform is zero-initialised
(so ``add`` starts as the identity and ``mul`` starts as ``x * 0.5``, as in the official code).
The paper's ablations default to ratio r = 16 (mmseg's segmentation head uses r = 4; a study can
set ``reduction``). ``pooling='avg'`` replaces the attention pooling by global average pooling
(the SE-style ablation of the paper). The mask conv is Kaiming-normal (fan-in) with zero bias,
as the official ``reset_parameters``.

Ours differs in one place: the bottleneck is ``max(C // r, min_width)`` channels (``min_width``
4 by default, :mod:`.widths`; 1 gives the paper's C // r). At this harness's C = 32, r = 16
gives 2 channels, and a LayerNorm over 2 channels outputs +-1 whatever its input: the gradient
into the attention pooling behind it all but vanishes (with r = 4, 8 channels, it does not).
At C // r >= 4, every real-dataset setting, the width is the paper's.
"""
from __future__ import annotations

import torch
from torch import nn

from . import maps
from ..config.vocab import choice, integer, reduction
from .widths import FLOOR, reduced


class GlobalContextBlock(nn.Module):
    """GCNet block: query-independent attention pooling, LN bottleneck, add/mul fusion."""

    FACTORS = (
        reduction("bottleneck ratio r: C -> C/r (paper: 16)"),
        choice("fusion", ("add", "mul"), "broadcast add or sigmoid-gated multiply"),
        choice("pooling", ("att", "avg"), "query-independent attention pooling or global average pooling (SE-like)"),
        integer("min_width", 1, "bottleneck floor: max(C // r, min_width) channels (1: the paper's C // r)"),
    )

    def __init__(self, channels: int, reduction: int = 16, fusion: str = "add", pooling: str = "att",
                 min_width: int = FLOOR):
        super().__init__()
        if fusion not in ("add", "mul"):
            raise ValueError(f"fusion must be 'add' or 'mul', got {fusion!r}")
        if pooling not in ("att", "avg"):
            raise ValueError(f"pooling must be 'att' or 'avg', got {pooling!r}")
        planes = reduced(channels, reduction, min_width)
        self.channels, self.fusion, self.pooling = channels, fusion, pooling
        self.widths = {"bottleneck": planes}
        if pooling == "att":
            self.mask = nn.Conv2d(channels, 1, 1)
            nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.mask.bias)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, planes, 1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(planes, channels, 1),
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, N) pooling weights: one distribution over positions, shared by every query."""
        if self.pooling == "avg":
            a = x.new_full((x.shape[0], x.shape[2] * x.shape[3]), 1.0 / (x.shape[2] * x.shape[3]))
        else:
            a = torch.softmax(self.mask(x).flatten(1), dim=-1)
        maps.record("context", a.unsqueeze(1), kind="maps", grid=x.shape[-2:])
        return a

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled (B, C, 1, 1) context."""
        a = self.attention(x)  # B, N
        return torch.einsum("bcn,bn->bc", x.flatten(2), a)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transform(self.context(x))
        return x + t if self.fusion == "add" else x * torch.sigmoid(t)
