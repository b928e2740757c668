"""CGNL: compact generalized non-local block (affinity over channels *and* positions).

Paper: *Compact Generalized Non-local Network*, Kaiyu Yue, Ming Sun, Yuchen Yuan, Feng Zhou,
Errui Ding, Fuxin Xu, NeurIPS 2018, https://arxiv.org/abs/1810.13125.
Official code consulted: KaiyuYue/cgnl-network.pytorch, ``model/resnet.py`` (``SpatialCGNL``,
``SpatialCGNLx``) -- read through a public copy of that file.

What the paper does
-------------------
The Non-local block relates positions only. CGNL relates every (channel, position) element to
every other: with ``t = theta(x)``, ``p = phi(x)``, ``g = g(x)`` flattened over channels *and*
positions, ``y_a = sum_b f(t_a, p_b) g_b``. That is a (CHW) x (CHW) affinity, made
**compact** by a kernel that factorises: with a Taylor expansion
``f(t, p) = sum_{k=0..P} alpha_k^2 t^k p^k``, ``y_a = sum_k alpha_k^2 t_a^k (sum_b p_b^k g_b)``
-- P + 1 scalars per sample, linear cost.

* ``dot`` kernel: ``f(t, p) = t p`` (only k = 1, alpha = 1): ``y = t * sum(p g)``.
* ``gaussian`` kernel: the RBF ``exp(-gamma (t - p)^2)`` expanded to order P with
  ``alpha_k^2 = beta (2 gamma)^k / k!``; the official code fixes ``gamma = 1e-4`` and simplifies
  ``beta = exp(-gamma (t^2 + p^2))`` to the constant ``exp(-2 gamma)`` ("training becomes very
  difficult" otherwise), order P = 3 in its model builder.
* Channels are split into ``groups`` (8 in the paper) and the compact kernel runs per group.
  theta/phi/g are 1x1 convs (no bias) to C/2; the output is a *grouped* 1x1 conv ``z`` back to
  C, GroupNorm (same groups) and the residual. Optional scaling by ``1/sqrt(C_g H W)``
  (``use_scale``, off in the paper's models). The official init zeroes the GroupNorm scale
  (and draws the block's convs from N(0, 0.01)), so the block starts as the identity.

Ours
----
Faithful, with both kernels behind ``kernel`` and the official constants (gamma 1e-4, the
simplified beta, order 3). The (inner) channel count C/``reduction`` must be divisible by
``groups``, and so must C (GroupNorm); the block says so when it is not.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import maps
from ..config.vocab import choice, integer, reduction, switch


def cgnl_kernel(t: torch.Tensor, p: torch.Tensor, g: torch.Tensor, groups: int, kernel: str = "dot",
                order: int = 3, gamma: float = 1e-4, scale: bool = False) -> torch.Tensor:
    """Compact generalized non-local aggregation; t, p, g: (B, C, H, W), C split into ``groups``."""
    b, c, h, w = t.shape
    cg = c // groups
    t, p, g = (z.reshape(b, groups, cg * h * w) for z in (t, p, g))
    if kernel == "dot":
        att = (p * g).sum(-1, keepdim=True)  # B, G, 1
        if scale:
            att = att / math.sqrt(cg * h * w)
        y = att * t
    elif kernel == "gaussian":
        beta = math.exp(-2 * gamma)
        y = torch.zeros_like(t)
        for k in range(order + 1):
            coeff = beta * (2 * gamma) ** k / math.factorial(k)  # alpha_k ** 2
            att = (p.pow(k) * g).sum(-1, keepdim=True)
            if scale:
                att = att / math.sqrt(cg * h * w)
            y = y + coeff * att * t.pow(k)
    else:
        raise ValueError(f"kernel must be 'dot' or 'gaussian', got {kernel!r}")
    return y.reshape(b, c, h, w)


class CGNLBlock(nn.Module):
    """CGNL block: theta/phi/g, compact kernel per channel group, grouped z, GroupNorm, residual."""

    FACTORS = (
        choice("kernel", ("dot", "gaussian"), "dot product or Taylor-expanded Gaussian RBF kernel"),
        integer("groups", 1, "channel groups with their own compact kernel (paper: 8)"),
        integer("order", 0, "Taylor order of the Gaussian kernel (official: 3)"),
        switch("scale", "divide by sqrt(C_g H W) (paper's models: off)"),
        reduction("inner width C/reduction (paper: 2)"),
    )

    def __init__(self, channels: int, kernel: str = "dot", groups: int = 8, order: int = 3,
                 scale: bool = False, reduction: int = 2):
        super().__init__()
        if kernel not in ("dot", "gaussian"):
            raise ValueError(f"kernel must be 'dot' or 'gaussian', got {kernel!r}")
        inter = max(1, channels // reduction)
        if inter % groups or channels % groups:
            raise ValueError(f"CGNL groups={groups} must divide both the {channels} channels and the "
                             f"{inter} inner channels (channels/reduction)")
        self.channels, self.inter, self.groups = channels, inter, groups
        self.kernel, self.order, self.scale = kernel, order, scale
        self.theta = nn.Conv2d(channels, inter, 1, bias=False)
        self.phi = nn.Conv2d(channels, inter, 1, bias=False)
        self.g = nn.Conv2d(channels, inter, 1, bias=False)
        self.z = nn.Conv2d(inter, channels, 1, groups=groups, bias=False)
        self.norm = nn.GroupNorm(groups, channels)
        for conv in (self.theta, self.phi, self.g, self.z):
            nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, p, g = self.theta(x), self.phi(x), self.g(x)
        if maps.active():  # each position's term p . g of the compact sum, per channel group
            with torch.no_grad():
                b, c, h, w = p.shape
                terms = (p * g).reshape(b, self.groups, c // self.groups, h * w).sum(2)
                maps.record("context_terms", terms, kind="maps", grid=(h, w))
        y = cgnl_kernel(t, p, g, self.groups, self.kernel, self.order, scale=self.scale)
        return x + self.norm(self.z(y))
