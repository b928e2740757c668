"""Local Relation: attention inside a k x k window with a learned geometry prior.

Paper: *Local Relation Networks for Image Recognition*, Han Hu, Zheng Zhang, Zhenda Xie,
Stephen Lin, ICCV 2019, https://arxiv.org/abs/1904.11491.
Official code: none released that we could find; consulted the paper and a public
re-implementation (gan3sh500/local-relational-nets) only to check our reading of the layer.

What the paper does
-------------------
The local relation layer replaces a k x k convolution (k = 7 by default in LR-Net). For an
output pixel p' and every pixel p in its k x k neighbourhood the aggregation weight is

    w(p', p) = softmax_p( Phi(f_q(x_p'), f_k(x_p)) + f_g(p - p') )

* key and query are 1x1 convs; channels are split into groups of ``m`` (default 8) channels
  that share one aggregation weight, so key/query have C/m channels: one scalar per group;
* ``Phi`` is the appearance composability of the (scalar) query and key;
* ``f_g`` is the geometry prior: a small two-layer MLP (1x1 convs with a ReLU) that maps the
  relative position ``p - p'`` to one bias per group, learned, shared over the image;
* the values are the input features themselves (no value transform); the surrounding 1x1
  convs of the bottleneck do the channel mixing, and the bottleneck has the ResNet residual.

Ours
----
:func:`local_window_reference` (in ``ablate_kernels.reference``, re-exported here) is the
windowed computation with ``unfold``, the reference the Triton kernel
``ablate_kernels.local_window`` is checked against; the block runs the kernel on CUDA and the
reference elsewhere (``ABLATE_KERNELS`` forces either). :class:`LocalRelationBlock` is
``x + BN(conv1x1(LR(x)))``: the local relation layer on the input, the bottleneck's output 1x1
conv + BN, and the residual; the BN scale is zero-initialised so the block starts as the identity
(as the Non-local block does; LR-Net's own init is the ResNet one -- our choice). Differences:

* ``composability``: the paper compares several forms of ``Phi``; we expose ``dot``
  (product of the per-group query and key, the default here, as in the public re-implementation)
  and ``squared_diff`` (``-(q - k)^2``). We could not confirm from the text available to us which
  form the paper's final model uses; the factor lets a study flip it.
* Window positions that fall outside the image are *excluded* from the softmax (masked with
  ``-inf``) instead of being zero-padded pixels that still receive weight; this keeps the
  reference a well-defined attention and matches the dense masked computation.
* The geometry MLP takes (dy, dx) normalised to [-1, 1] and has 16 hidden units
  (the paper does not make its hidden width a headline number; it is not a factor).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate_kernels.reference import local_window_reference  # noqa: F401 (the reference, re-exported)

from . import maps
from ..config.vocab import choice, integer, switch


def window_affinity(q: torch.Tensor, k: torch.Tensor, geometry_bias: torch.Tensor, window: int,
                    composability: str = "dot") -> torch.Tensor:
    """(B, G, N, N): the windowed softmax of :func:`local_window_reference` as dense maps, one per
    group (row = query pixel; zero outside its window and outside the image)."""
    b, gd, h, w = q.shape
    g = geometry_bias.shape[0]
    qf, kf = q.reshape(b, g, gd // g, h * w), k.reshape(b, g, gd // g, h * w)
    s = torch.einsum("bgdn,bgdm->bgnm", qf, kf)
    if composability == "squared_diff":
        s = 2 * s - (qf * qf).sum(2)[..., :, None] - (kf * kf).sum(2)[..., None, :]
    r = window // 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = ys.flatten()[None, :] - ys.flatten()[:, None]  # [query, key]
    dx = xs.flatten()[None, :] - xs.flatten()[:, None]
    allowed = (dy.abs() <= r) & (dx.abs() <= r)
    slot = ((dy + r) * window + (dx + r)).clamp(0, window * window - 1).to(q.device)
    s = s + geometry_bias.to(s.dtype)[:, slot].unsqueeze(0)
    return maps.masked_softmax(s, allowed.to(q.device))


class LocalRelationBlock(nn.Module):
    """Local relation layer + output 1x1 conv/BN + residual."""

    FACTORS = (
        choice("window", (1, 3, 5, 7, 9, 11, 13, 15), "odd side k of the k x k window (paper: 7)"),
        integer("channels_per_group", 1, "channels sharing one aggregation weight, m (paper: 8); key/query "
                "have C/m channels"),
        switch("geometry", "learned geometry prior over relative positions"),
        choice("composability", ("dot", "squared_diff"), "appearance term: q*k or -(q-k)^2 per group"),
    )

    def __init__(self, channels: int, window: int = 7, channels_per_group: int = 8, geometry: bool = True,
                 composability: str = "dot", geometry_hidden: int = 16):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be odd and >= 1, got {window}")
        if composability not in ("dot", "squared_diff"):
            raise ValueError(f"composability must be 'dot' or 'squared_diff', got {composability!r}")
        groups = max(1, channels // channels_per_group)
        while channels % groups:
            groups -= 1
        self.channels, self.window, self.groups = channels, window, groups
        self.composability = composability
        self.query = nn.Conv2d(channels, groups, 1)
        self.key = nn.Conv2d(channels, groups, 1)
        if geometry:
            r = window // 2
            ys, xs = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
            rel = torch.stack([ys, xs]).float().view(2, window * window) / max(r, 1)
            self.register_buffer("relative_position", rel, persistent=False)
            self.geometry = nn.Sequential(nn.Conv1d(2, geometry_hidden, 1), nn.ReLU(),
                                          nn.Conv1d(geometry_hidden, groups, 1))
        else:
            self.geometry = None
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)

    def geometry_bias(self) -> torch.Tensor:
        if self.geometry is None:
            return self.query.weight.new_zeros(self.groups, self.window * self.window)
        return self.geometry(self.relative_position.unsqueeze(0)).squeeze(0)  # G, k*k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ablate_kernels.local_window import local_window_attention  # Triton on CUDA, the reference elsewhere

        q, k, bias = self.query(x), self.key(x), self.geometry_bias()
        if maps.active():  # the window softmax as one map, mean over the groups (the kernel never holds it)
            with torch.no_grad():
                dense = window_affinity(q, k, bias, self.window, self.composability).mean(1)
                maps.record("window", dense, grid=x.shape[-2:])
        y = local_window_attention(q, k, x, bias, self.window, self.composability)
        return x + self.out(y)
