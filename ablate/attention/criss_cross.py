"""CCNet: recurrent criss-cross attention.

Paper: *CCNet: Criss-Cross Attention for Semantic Segmentation*, Zilong Huang, Xinggang Wang,
Lichao Huang, Chang Huang, Yunchao Wei, Wenyu Liu, ICCV 2019, https://arxiv.org/abs/1811.11721.
Official code consulted: speedinghzl/CCNet (``CrissCrossAttention`` in ``cc_attention``, the
pure-PyTorch version that replaced the CUDA op); mmcv's ``ops.CrissCrossAttention`` (same
formulation) used by mmsegmentation's ``CCHead``.

What the paper does
-------------------
Each pixel ``u`` attends only to the pixels in its own row and column: H + W - 1 pixels, the
centre counted once. Query and key are 1x1 convs to C/8 channels, value a 1x1 conv to C; the
scores ``q_u . k_v`` (no 1/sqrt(d)) over the criss-cross band go through one softmax and weight
the values; ``y = gamma * out + x`` with a learnable scalar ``gamma`` initialised to 0. The
official code builds the column scores and the row scores separately and puts ``-inf`` on the
centre of the *column* part so the centre is counted once (in the row part). Applying the
module ``R`` times (recurrence, default R = 2, **the same weights** each time) lets every pixel
reach every other pixel in two hops.

Ours
----
:func:`criss_cross_reference` is the band computation in pure PyTorch; it never builds the
N x N matrix, only the ``B x H x W x (H + W)`` band scores, and is the reference the Triton
kernel ``ablate_kernels.criss_cross`` is checked against; the module runs the kernel on CUDA
and the reference elsewhere (``ABLATE_KERNELS`` forces either). :class:`CrissCrossAttention` is one module and
:class:`CCNetBlock` re-applies it ``R`` times. Like the official module the block includes its
own zero-init-gamma residual, so it is the identity at initialisation. The conv-BN-ReLU layers
the CCNet head puts before and after the recurrence belong to the head, not the block.
"""
from __future__ import annotations

import torch
from torch import nn

from .pairwise import QueryKeyValue


def criss_cross_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Criss-cross attention without the N x N matrix.

    ``q``, ``k``: (B, d, H, W); ``v``: (B, c, H, W). For each pixel (h, w) the scores against
    its column (i, w) for every row i and its row (h, j) for every column j are concatenated
    (H + W entries), the centre is removed from the column part (``-inf``) so it appears once,
    one softmax runs over the band and the values are summed with those weights.
    Returns (B, c, H, W).
    """
    if q.shape != k.shape or q.shape[0] != v.shape[0] or q.shape[2:] != v.shape[2:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    h = q.shape[2]
    # column part: scores[b, h, w, i] = q[b, :, h, w] . k[b, :, i, w]
    col = torch.einsum("bdhw,bdiw->bhwi", q, k)
    centre = torch.eye(h, dtype=torch.bool, device=q.device).view(h, 1, h)  # [h, ., i]: i == h
    col = col.masked_fill(centre, float("-inf"))
    # row part: scores[b, h, w, j] = q[b, :, h, w] . k[b, :, h, j]
    row = torch.einsum("bdhw,bdhj->bhwj", q, k)
    attn = torch.softmax(torch.cat([col, row], dim=-1), dim=-1)
    a_col, a_row = attn[..., :h], attn[..., h:]
    out = torch.einsum("bciw,bhwi->bchw", v, a_col)
    return out + torch.einsum("bchj,bhwj->bchw", v, a_row)


class CrissCrossAttention(QueryKeyValue):
    """One criss-cross module: q/k at C/qk_reduction, v at C, zero-init gamma, residual."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ablate_kernels.criss_cross import criss_cross_attention  # Triton on CUDA, the reference elsewhere

        out = criss_cross_attention(self.query(x), self.key(x), self.value(x))
        return x + self.gamma * out


class CCNetBlock(nn.Module):
    """Recurrent criss-cross attention: the same module applied ``R`` times."""

    def __init__(self, channels: int, R: int = 2, qk_reduction: int = 8):
        super().__init__()
        if R < 1:
            raise ValueError(f"R (recurrences) must be >= 1, got {R}")
        self.channels, self.R = channels, R
        self.cca = CrissCrossAttention(channels, qk_reduction)
        self.widths = {"qk": self.cca.query.out_channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.R):
            x = self.cca(x)
        return x
