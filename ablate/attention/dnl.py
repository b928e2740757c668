"""Disentangled Non-local (DNL): a whitened pairwise term and a unary term (pairwise family).

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

from . import maps
from ..config.vocab import number, reduction, switch
from .widths import reduced


class DisentangledNonLocalBlock(nn.Module):
    """DNL: whitened pairwise softmax + query-independent unary softmax, temperature, residual."""

    FACTORS = (
        switch("unary", "query-independent unary term softmax(w . x_j)"),
        switch("whiten", "subtract the spatial means of query and key (whitened pairwise)"),
        number("temperature", 1e-6, "softmax temperature tau (official: 0.05)"),
        switch("scale", "divide dot products by sqrt(d) (official segmentation: on)"),
        reduction("inner width C/reduction (paper: 2)"),
    )

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
        attn = torch.softmax(s / self.temperature, dim=-1)
        maps.record("pairwise", attn, grid=x.shape[-2:])
        return attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        v = self.g(x).flatten(2).transpose(1, 2)  # B, N, d
        y = self.pairwise(x) @ v  # B, N, d
        if self.unary_mask is not None:
            m = torch.softmax(self.unary_mask(x).flatten(1), dim=-1)  # B, N
            maps.record("unary", m.unsqueeze(1), kind="maps", grid=(h, w))
            y = y + (m.unsqueeze(1) @ v)  # same unary context for every query
        y = y.transpose(1, 2).reshape(b, self.inter, h, w)
        return x + self.out(y)
