"""Query-independent context: GCNet's global context block and the Disentangled Non-local block.

GCNet
-----
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

Disentangled Non-local (DNL)
----------------------------
Paper: *Disentangled Non-Local Neural Networks*, Minghao Yin, Zhuliang Yao, Yue Cao, Xiu Li,
Zheng Zhang, Stephen Lin, Han Hu, ECCV 2020, https://arxiv.org/abs/2006.06668.
Official code consulted: yinmh17/DNL-Semantic-Segmentation; mmseg's ``DNLHead``
(``DisentangledNonLocal2d``), which ports it.

The paper splits the embedded-Gaussian affinity into a **whitened pairwise** term -- query and
key have their means over positions subtracted, ``softmax_j((q_i - mu_q) . (k_j - mu_k) / tau)``
-- that models relations between regions, and a **unary** term ``softmax_j(w_m . x_j)`` that is
the same for every query (GCNet's context) and models salient boundaries. Both weight the same
value ``g(x)``; the output is ``x + W_z(pairwise + unary)`` with ``W_z`` a 1x1 conv + BN whose
scale is zero-initialised. The official segmentation setting: inner channels C/2, dot products
scaled by ``1/sqrt(d)`` and by a temperature ``tau = 0.05``. Convs theta, phi, g: N(0, 0.01^2),
zero bias (mmseg's ``DisentangledNonLocal2d`` inherits this init from mmcv's ``NonLocal2d``).

Ours: faithful; ``unary`` and ``whiten`` switch the two changes off (both off gives an
embedded-Gaussian Non-local block with temperature), ``temperature`` and ``scale`` are exposed.
The unary mask is computed from the block input x, as the official code does. The inner width
C/2 follows the shared floor of :mod:`.widths` (no change at C >= 8).
"""
from __future__ import annotations

import torch
from torch import nn

from .widths import FLOOR, reduced


class GlobalContextBlock(nn.Module):
    """GCNet block: query-independent attention pooling, LN bottleneck, add/mul fusion."""

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
            return x.new_full((x.shape[0], x.shape[2] * x.shape[3]), 1.0 / (x.shape[2] * x.shape[3]))
        return torch.softmax(self.mask(x).flatten(1), dim=-1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled (B, C, 1, 1) context."""
        a = self.attention(x)  # B, N
        return torch.einsum("bcn,bn->bc", x.flatten(2), a)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transform(self.context(x))
        return x + t if self.fusion == "add" else x * torch.sigmoid(t)


class DisentangledNonLocalBlock(nn.Module):
    """DNL: whitened pairwise softmax + query-independent unary softmax, temperature, residual."""

    def __init__(self, channels: int, reduction: int = 2, unary: bool = True, whiten: bool = True,
                 temperature: float = 0.05, scale: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        inter = reduced(channels, reduction)
        self.channels, self.inter = channels, inter
        self.widths = {"inner": inter}
        self.unary, self.whiten, self.temperature, self.scale = unary, whiten, temperature, scale
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        for conv in (self.theta, self.phi, self.g):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.unary_mask = nn.Conv2d(channels, 1, 1) if unary else None
        self.out = nn.Sequential(nn.Conv2d(inter, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, N, N) pairwise attention."""
        q = self.theta(x).flatten(2).transpose(1, 2)  # B, N, d
        k = self.phi(x).flatten(2)  # B, d, N
        if self.whiten:
            q = q - q.mean(dim=1, keepdim=True)
            k = k - k.mean(dim=2, keepdim=True)
        s = q @ k
        if self.scale:
            s = s * self.inter ** -0.5
        return torch.softmax(s / self.temperature, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v = self.g(x).flatten(2).transpose(1, 2)  # B, N, d
        y = self.pairwise(x) @ v  # B, N, d
        if self.unary_mask is not None:
            m = torch.softmax(self.unary_mask(x).flatten(1), dim=-1)  # B, N
            y = y + (m.unsqueeze(1) @ v)  # same unary context for every query
        y = y.transpose(1, 2).reshape(b, self.inter, h, w)
        return x + self.out(y)
